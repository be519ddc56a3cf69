"""miredoctl: run a fleet of Teredo engines from a YAML inventory under supervisord."""

__version__ = "0.1.0"
