"""One bounded HTTP/1.1 exchange on a plain TCP socket, for the UPnP IGD client (`upnp`).

Why not `http.client`: it imports `ssl` (with OpenSSL's libssl and libcrypto) and the `email`
package, about 5.5 MiB of private memory and 34 modules in a client's worker for two kinds of
request to one LAN device (docs/performance.md, "The UPnP client without http.client").  An
IGD needs little of HTTP: a GET of its device description and a POST per SOAP call, each on
its own connection (``Connection: close``), answered with a ``Content-Length`` body, a
``Transfer-Encoding: chunked`` one, or a body that ends when the device closes.

What answers comes from the LAN, so everything is bounded (docs/security.md): the URL's host
must be an IPv4 address (an IGD's URLs name the address that answered the SSDP search, so no
name is ever resolved, and no codec beyond ASCII is needed after a chroot), the request line
and headers may not carry control characters (a control URL comes from the device's own XML),
the header section is limited in bytes and lines, the body in bytes, each connect and read
in time and the whole answer in time; every malformed answer is an `HttpError` whose text
says what was wrong in one line.
"""

from __future__ import annotations

import socket
import time

from engine.proto.records import dataclass

MAX_HEAD_BYTES = 8192
"""The status line and headers together; miniupnpd sends about 300 bytes."""
MAX_HEADERS = 64
"""Header lines in one answer."""
MAX_CHUNK_LINE = 1024
"""One chunk-size line (hex digits and any chunk extensions)."""
READ_SIZE = 16384


class HttpError(Exception):
    """The exchange failed or the answer was malformed: one line saying what was wrong."""


@dataclass(frozen=True)
class Url:
    """An ``http://IPv4[:port]/path`` URL, split."""

    host: str
    port: int
    target: str  # path and query, as sent on the request line


@dataclass(frozen=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...]  # names lower-cased, in the order received
    body: bytes
    local_ip: str  # our address on the connection (the IGD's LAN side sees this one)


def _printable(text: str) -> bool:
    """ASCII without controls or spaces: safe on a request line or in a Host header."""
    return text.isascii() and all(" " < c < "\x7f" for c in text)


def split_url(url: str) -> Url:
    """The parts of an ``http://`` URL whose host is an IPv4 address; HttpError otherwise."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "http":
        raise HttpError("not an http URL")
    end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0], default=len(rest))
    authority, target = rest[:end], rest[end:].partition("#")[0]
    if not target.startswith("/"):  # "" or "?query"
        target = "/" + target
    if "@" in authority:
        raise HttpError("URL with user information")
    host, colon, port_text = authority.partition(":")
    if host.startswith("["):  # an IPv6 literal, port or not
        host, colon = authority, ""
    try:
        packed = socket.inet_pton(socket.AF_INET, host)
    except (OSError, ValueError):  # ValueError: a NUL in it
        raise HttpError(f"host {host!r} is not an IPv4 address") from None
    if not colon or port_text == "":
        port = 80
    elif port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise HttpError(f"bad port {port_text!r}")
    if not _printable(target):
        raise HttpError("control characters, spaces or non-ASCII in the path")
    return Url(socket.inet_ntop(socket.AF_INET, packed), port, target)


_TAB_AND_NEWLINES = str.maketrans("", "", "\t\r\n")
_C0_AND_SPACE = "".join(map(chr, range(0x21)))
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")


def join_url(base: str, ref: str) -> str:
    """`ref` (a device description's control URL) resolved against `base` (its URLBase or
    its own location), as RFC 3986 §5.2 resolves a reference: an absolute URL as it is, and a
    network-path (``//host/x``), absolute-path (``/x``), relative-path (``x``, ``../x``),
    query or fragment reference against the base, dot segments removed.

    `urllib.parse.urljoin` did this, but imports `ipaddress` with it: 1.7 ms of a client's
    worker before its first Router Solicitation, and about 0.4 MiB (docs/performance.md,
    "Without ipaddress").  As there (and in the WHATWG URL standard), tabs and line breaks
    are removed first, and leading and trailing spaces and controls; what is left of the
    result is checked by `split_url` before any request is made."""
    base = base.translate(_TAB_AND_NEWLINES).strip(_C0_AND_SPACE)
    ref = ref.translate(_TAB_AND_NEWLINES).strip(_C0_AND_SPACE)
    colon = ref.find(":")
    first_delim = min([i for i in (ref.find(c) for c in "/?#") if i >= 0], default=len(ref))
    if 0 < colon < first_delim and ref[0].isalpha() and set(ref[:colon]) <= _SCHEME_CHARS:
        return ref  # absolute: its own scheme
    scheme, sep, rest = base.partition("://")
    if not sep:
        return ref  # nothing to resolve against
    end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0], default=len(rest))
    authority = rest[:end]
    path, _q, query = rest[end:].partition("#")[0].partition("?")
    if ref.startswith("//"):
        return f"{scheme}:{ref}"
    if ref == "":
        return base
    if ref.startswith("#"):
        return f"{scheme}://{authority}{path}" + (f"?{query}" if _q else "") + ref
    if ref.startswith("?"):
        return f"{scheme}://{authority}{path}{ref}"
    cut = min([i for i in (ref.find(c) for c in "?#") if i >= 0], default=len(ref))
    ref_path, tail = ref[:cut], ref[cut:]
    if not ref_path.startswith("/"):
        ref_path = (path[:path.rfind("/") + 1] if path else "/") + ref_path
    return f"{scheme}://{authority}{_remove_dot_segments(ref_path)}{tail}"


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path: ``.`` dropped, ``..`` removes the segment before
    it (never the root), and a path ending in either ends with ``/``."""
    out: list[str] = []
    segments = path.split("/")
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if seg in (".", ".."):
            if seg == ".." and len(out) > 1:
                out.pop()
            if i == last:
                out.append("")
            continue
        out.append(seg)
    return "/".join(out)


class _Answer:
    """The bytes of one answer as they arrive, each read bounded in time and all of them in
    total by `limit` bytes and by the exchange's deadline."""

    def __init__(self, sock: socket.socket, read_timeout: float, deadline: float,
                 limit: int) -> None:
        self.sock = sock
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.limit = limit
        self.buf = bytearray()
        self.received = 0
        self.eof = False

    def fill(self) -> bool:
        """Read once more; False at the end of the stream."""
        if self.eof:
            return False
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise HttpError("answer not complete in time")
        self.sock.settimeout(min(self.read_timeout, left))
        try:
            data = self.sock.recv(READ_SIZE)
        except TimeoutError:
            if left < self.read_timeout:
                raise HttpError("answer not complete in time") from None
            raise
        if not data:
            self.eof = True
            return False
        self.received += len(data)
        if self.received > self.limit:
            raise HttpError(f"more than {self.limit} bytes on the connection")
        self.buf += data
        return True

    def line(self, limit: int, what: str, bound: int = 0) -> bytes:
        """One line, without its CRLF (or bare LF); at most `limit` bytes, of a part of the
        answer bounded to `bound` bytes in all (the error names that bound)."""
        while True:
            end = self.buf.find(b"\n", 0, limit + 2)
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[:end + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self.buf) > limit + 1:
                raise HttpError(f"{what} longer than {bound or limit} bytes")
            if not self.fill():
                raise HttpError(f"connection closed in the {what}")

    def exactly(self, n: int, what: str) -> bytes:
        while len(self.buf) < n:
            if not self.fill():
                raise HttpError(f"connection closed early ({len(self.buf)} of {n} bytes of "
                                f"the {what})")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def rest(self, limit: int) -> bytes:
        """Everything up to the end of the stream, at most `limit` bytes."""
        while self.fill():
            if len(self.buf) > limit:
                raise HttpError(f"answer longer than {limit} bytes")
        if len(self.buf) > limit:
            raise HttpError(f"answer longer than {limit} bytes")
        data = bytes(self.buf)
        self.buf.clear()
        return data


def _head(answer: _Answer) -> tuple[int, list[tuple[str, str]]]:
    """The status code and headers of one answer."""
    used = 0
    status_line = answer.line(MAX_HEAD_BYTES, "status line")
    used += len(status_line) + 2
    version, _, rest = status_line.partition(b" ")
    code = rest[:3]
    if (not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit()
            or rest[3:4] not in (b"", b" ")):
        raise HttpError("bad status line")
    headers: list[tuple[str, str]] = []
    while True:
        if used >= MAX_HEAD_BYTES:
            raise HttpError(f"header section longer than {MAX_HEAD_BYTES} bytes")
        raw = answer.line(MAX_HEAD_BYTES - used, "header section", MAX_HEAD_BYTES)
        used += len(raw) + 2
        if not raw:
            return int(code), headers
        if len(headers) == MAX_HEADERS:
            raise HttpError(f"more than {MAX_HEADERS} header lines")
        name, colon, value = raw.partition(b":")
        if not colon or not name or name != name.strip() or not name.isascii():
            raise HttpError("bad header line")
        headers.append((name.decode("ascii").lower(), value.strip().decode("latin-1")))


def _chunked(answer: _Answer, limit: int) -> bytes:
    """A ``Transfer-Encoding: chunked`` body: chunks, the last (size 0), trailers."""
    body = bytearray()
    while True:
        size_text = answer.line(MAX_CHUNK_LINE, "chunk size line").partition(b";")[0].strip()
        try:
            if not size_text or not size_text.isascii() or size_text.startswith((b"-", b"+")):
                raise ValueError
            size = int(size_text, 16)
        except ValueError:
            raise HttpError("bad chunk size") from None
        if size == 0:
            break
        if len(body) + size > limit:
            raise HttpError(f"answer longer than {limit} bytes")
        body += answer.exactly(size, "chunk")
        end = answer.exactly(1, "chunk end")
        if end == b"\r":
            end += answer.exactly(1, "chunk end")
        if end not in (b"\n", b"\r\n"):
            raise HttpError("chunk longer than its size")
    for _ in range(MAX_HEADERS):  # trailers, read and dropped
        if answer.line(MAX_HEAD_BYTES, "trailer") == b"":
            return bytes(body)
    raise HttpError(f"more than {MAX_HEADERS} trailer lines")


def _body(answer: _Answer, headers: list[tuple[str, str]], limit: int) -> bytes:
    coding = [v for n, v in headers if n == "transfer-encoding"]
    lengths = {v for n, v in headers if n == "content-length"}
    if coding:
        if [c.strip().lower() for c in ",".join(coding).split(",")] != ["chunked"]:
            raise HttpError(f"unsupported Transfer-Encoding {', '.join(coding)!r}")
        return _chunked(answer, limit)
    if lengths:
        text = lengths.pop()
        if lengths or not text.isascii() or not text.isdigit():
            raise HttpError("bad Content-Length")
        length = int(text)
        if length > limit:
            raise HttpError(f"answer longer than {limit} bytes")
        return answer.exactly(length, "body")
    return answer.rest(limit)  # the device closes the connection after the body


def exchange(method: str, url: str, *, body: bytes | None = None,
             headers: tuple[tuple[str, str], ...] = (), timeout: float,
             total: float, max_body: int) -> Response:
    """Send one request on a new connection and read its whole answer.

    `timeout` bounds the connect and each read, `total` (seconds) the whole exchange,
    `max_body` the body; interim ``1xx`` answers are skipped."""
    parts = split_url(url)
    for name, value in headers:
        if not _printable(name) or not value.isascii() or any(c < " " for c in value):
            raise HttpError(f"bad request header {name!r}")
    host = parts.host if parts.port == 80 else f"{parts.host}:{parts.port}"
    head = [f"{method} {parts.target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers]
    if body is not None:
        head.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + (body or b"")
    end = time.monotonic() + total
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(min(timeout, total))
        sock.connect((parts.host, parts.port))
        local_ip = sock.getsockname()[0]
        sock.sendall(request)
        answer = _Answer(sock, timeout, end, MAX_HEAD_BYTES * 2 + max_body * 2)
        status, answer_headers = _head(answer)
        while 100 <= status < 200:
            status, answer_headers = _head(answer)
        data = _body(answer, answer_headers, max_body)
        return Response(status, tuple(answer_headers), data, local_ip)
    except TimeoutError:
        raise HttpError("timed out") from None
    except OSError as e:
        raise HttpError(e.strerror or str(e)) from None
    finally:
        sock.close()
