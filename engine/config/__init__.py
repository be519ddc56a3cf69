"""miredo.conf and miredo-server.conf, read into one typed `EngineConfig` (contracts.md §2).

The syntax is miredo's (first value word only, `#` comments as a first word, case-insensitive
names), with miredo's silent failures turned into `file:line: message` errors: unknown directives,
bad values, overlong lines. Duplicate or misplaced directives are warnings, as in miredo.
"""

from .directives import DIRECTIVES, RELAY_TYPE_WORDS
from .loader import load_config, parse_config, peek_role_and_status_socket
from .model import ConfigError, EngineConfig
from .values import Resolver, system_resolver

__all__ = [
    "DIRECTIVES",
    "RELAY_TYPE_WORDS",
    "ConfigError",
    "EngineConfig",
    "Resolver",
    "load_config",
    "parse_config",
    "peek_role_and_status_socket",
    "system_resolver",
]
