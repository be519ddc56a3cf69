"""Pure Teredo protocol: no sockets, no os calls, time is an argument (see docs/contracts.md).

Section references in this package's comments (`§5.6`, `spec §9`, `§12.2 #8`) are to
docs/protocol.md; docs/architecture.md says what this package may import.
"""
