"""Pure Teredo protocol: no sockets, no os calls, time is an argument (see docs/contracts.md)."""
