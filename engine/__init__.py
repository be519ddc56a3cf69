"""A miredo-compatible Teredo engine: client, relay and server roles (RFC 4380, RFC 5991)."""

__version__ = "0.1.0"
