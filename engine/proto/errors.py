"""The single exception type of the pure protocol layer.

Every parser in `engine.proto` turns malformed input into a `ParseError` and nothing else, so a
role can wrap one `except ParseError` around untrusted datagrams and count the drop by
`e.field` without ever catching a programming error by accident.
"""

from __future__ import annotations


class ParseError(ValueError):
    """A packet (or address) failed to parse; `field` names the offending packet field.

    `field` is a dotted name such as ``"auth.id_len"`` or ``"ipv6.payload_length"`` and is
    stable, so callers may use it as a drop-reason key. `str(e)` is one line:
    ``"<field>: <message>"``.
    """

    def __init__(self, field: str, message: str = "invalid") -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def __reduce__(self):  # keep pickling (multiprocessing, pytest-xdist) working
        return (type(self), (self.field, self.message))
