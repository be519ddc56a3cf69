"""engine.runtime.http_lite: the UPnP client's HTTP/1.1 on a plain socket, against a loopback
server that answers with canned bytes, sent in the pieces a test chooses.  Every malformed or
oversized answer is one HttpError saying what was wrong, never a hang or another exception."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from engine.runtime import http_lite
from engine.runtime.http_lite import HttpError

LIMIT = 1000
Pieces = list[bytes | float]  # bytes to send, or seconds to pause before the next piece


class Server:
    """Accepts connections on loopback; answers each with the next canned answer (or stays
    silent when none is left) and records what each request carried."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.answers: list[bytes | Pieces] = []
        self.requests: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def url(self, path: str = "/rootDesc.xml") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _read_request(self, conn: socket.socket) -> bytes:
        data = b""
        conn.settimeout(2)
        while b"\r\n\r\n" not in data:
            more = conn.recv(65536)
            if not more:
                return data
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                while len(body) < int(value):
                    body += conn.recv(65536)
        return head + b"\r\n\r\n" + body

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    self.requests.append(self._read_request(conn))
                    if not self.answers:
                        self.stop.wait(3)  # silent: the client gives up first
                        continue
                    answer = self.answers.pop(0)
                    for piece in [answer] if isinstance(answer, bytes) else answer:
                        if isinstance(piece, float):
                            if self.stop.wait(piece):
                                break
                        else:
                            conn.sendall(piece)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=10)


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def _get(server: Server, *, timeout: float = 2.0, total: float = 5.0,
         **kw) -> http_lite.Response:
    return http_lite.exchange("GET", server.url(), timeout=timeout, total=total,
                              max_body=LIMIT, **kw)


def _one_by_one(data: bytes) -> Pieces:
    return [data[i:i + 1] for i in range(len(data))]


# ---------------------------------------------------------------- what goes out

def test_get_request_and_content_length_answer(server: Server) -> None:
    server.answers.append(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
                          b"Content-Length: 7\r\n\r\n<root/>ignored after the length")
    r = _get(server)
    assert (r.status, r.body, r.local_ip) == (200, b"<root/>", "127.0.0.1")
    assert ("content-type", "text/xml") in r.headers
    assert server.requests == [b"GET /rootDesc.xml HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                               b"Connection: close\r\n\r\n" % server.port]


def test_post_sends_its_headers_and_a_counted_body(server: Server) -> None:
    server.answers.append(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\nno")
    r = http_lite.exchange("POST", server.url("/ctl/IPConn?x=1"), body=b"<a>\xc3\xa9</a>",
                           headers=(("SOAPAction", '"urn:x#Y"'),), timeout=2, total=5,
                           max_body=LIMIT)
    assert (r.status, r.body) == (500, b"no")
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"POST /ctl/IPConn?x=1 HTTP/1.1", b"Host: 127.0.0.1:%d" % server.port,
        b"Connection: close", b'SOAPAction: "urn:x#Y"', b"Content-Length: 9"]
    assert body == b"<a>\xc3\xa9</a>"


# ---------------------------------------------------------------- bodies

def test_chunked_answer_arriving_byte_by_byte(server: Server) -> None:
    answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\n<root\r\n9;ext=1\r\n>text</ro\r\n3\r\not>\r\n0\r\nX-Trailer: t\r\n\r\n")
    server.answers.append(_one_by_one(answer))
    assert _get(server).body == b"<root>text</root>"


def test_body_until_the_device_closes(server: Server) -> None:
    server.answers.append([b"HTTP/1.0 200 OK\r\n\r\n<root>", 0.05, b"</root>"])
    assert _get(server).body == b"<root></root>"


def test_bare_line_feeds_and_an_interim_answer(server: Server) -> None:
    server.answers.append(b"HTTP/1.1 100 Continue\r\n\r\n"
                          b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok")
    r = _get(server)
    assert (r.status, r.body) == (200, b"ok")


def test_body_of_exactly_the_limit(server: Server) -> None:
    server.answers.append(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % LIMIT
                          + b"x" * LIMIT)
    assert len(_get(server).body) == LIMIT


# ---------------------------------------------------------------- malformed answers

HEAD_OK = b"HTTP/1.1 200 OK\r\n"


@pytest.mark.parametrize("answer, message", [
    (b"\x00\x01garbage\r\n\r\n", "bad status line"),
    (b"ICY 200 OK\r\n\r\n", "bad status line"),
    (b"HTTP/1.1 2x0 OK\r\n\r\n", "bad status line"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "bad status line"),
    (b"HTTP/1.1 200 OK", "connection closed in the status line"),
    (b"", "connection closed in the status line"),
    (HEAD_OK + b"X: " + b"a" * http_lite.MAX_HEAD_BYTES + b"\r\n\r\n",
     "header section longer than 8192 bytes"),
    (b"HTTP/1.1 200 " + b"O" * http_lite.MAX_HEAD_BYTES + b"\r\n\r\n",
     "status line longer than 8192 bytes"),
    (HEAD_OK + b"X: y\r\n" * (http_lite.MAX_HEADERS + 1) + b"\r\n", "more than 64 header lines"),
    (HEAD_OK + b"no colon here\r\n\r\n", "bad header line"),
    (HEAD_OK + b" Folded: x\r\n\r\n", "bad header line"),
    (HEAD_OK + b"Content-Length: 5", "connection closed in the header section"),
    (HEAD_OK + b"Content-Length: 100\r\n\r\n0123456789",
     r"connection closed early \(10 of 100 bytes of the body\)"),
    (HEAD_OK + b"Content-Length: %d\r\n\r\n" % (LIMIT + 1), "answer longer than 1000 bytes"),
    (HEAD_OK + b"\r\n" + b"x" * (LIMIT + 1), "answer longer than 1000 bytes"),
    (HEAD_OK + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", "bad Content-Length"),
    (HEAD_OK + b"Content-Length: -1\r\n\r\n", "bad Content-Length"),
    (HEAD_OK + b"Content-Length: 0x10\r\n\r\n", "bad Content-Length"),
    (HEAD_OK + b"Transfer-Encoding: gzip, chunked\r\n\r\n",
     "unsupported Transfer-Encoding 'gzip, chunked'"),
    (HEAD_OK + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (HEAD_OK + b"Transfer-Encoding: chunked\r\n\r\n-1\r\n", "bad chunk size"),
    (HEAD_OK + b"Transfer-Encoding: chunked\r\n\r\n\r\n", "bad chunk size"),
    (HEAD_OK + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
     "chunk longer than its size"),
    (HEAD_OK + b"Transfer-Encoding: chunked\r\n\r\n10\r\nabc",
     r"connection closed early \(3 of 16 bytes of the chunk\)"),
    (HEAD_OK + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
     "connection closed in the chunk size line"),
    (HEAD_OK + b"Transfer-Encoding: chunked\r\n\r\n" + b"1f4\r\n" + b"x" * 500 + b"\r\n"
     + b"1f4\r\n" + b"y" * 500 + b"\r\n1\r\nz\r\n0\r\n\r\n", "answer longer than 1000 bytes"),
    (HEAD_OK + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n",
     "answer longer than 1000 bytes"),
    (HEAD_OK + b"Transfer-Encoding: chunked\r\n\r\n0\r\n" + b"T: x\r\n" * 65 + b"\r\n",
     "more than 64 trailer lines"),
], ids=["binary", "not-http", "status-not-digits", "status-4-digits", "closed-in-status",
        "closed-at-once", "long-header", "long-status", "many-headers", "no-colon", "folded",
        "closed-in-headers", "closed-early", "declared-too-long", "too-long-to-close",
        "two-lengths", "negative-length", "hex-length", "gzip", "chunk-size-not-hex",
        "chunk-size-negative", "chunk-size-empty", "chunk-overrun", "closed-in-chunk",
        "closed-before-last-chunk", "chunks-too-long", "huge-chunk", "many-trailers"])
def test_malformed_answer(server: Server, answer: bytes, message: str) -> None:
    server.answers.append(answer)
    with pytest.raises(HttpError, match=f"^{message}$"):
        _get(server)


def test_silent_server_times_out(server: Server) -> None:
    with pytest.raises(HttpError, match=r"^timed out$"):
        _get(server, timeout=0.2)


def test_trickling_server_ends_at_the_exchange_bound(server: Server) -> None:
    """Each byte comes well within the per-read timeout; the whole answer does not."""
    body = b"x" * 100
    trickle: Pieces = []
    for piece in _one_by_one(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + body):
        trickle += [piece, 0.02]
    server.answers.append(trickle)
    with pytest.raises(HttpError, match=r"^answer not complete in time$"):
        _get(server, timeout=1.0, total=0.3)


def test_connection_refused() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    with pytest.raises(HttpError, match=r"^Connection refused$"):
        http_lite.exchange("GET", f"http://127.0.0.1:{port}/", timeout=2, total=5,
                           max_body=LIMIT)


# ---------------------------------------------------------------- URLs and request headers

@pytest.mark.parametrize("url, parts", [
    ("http://192.0.2.1", ("192.0.2.1", 80, "/")),
    ("HTTP://192.0.2.1:5000/a/b?c=d#frag", ("192.0.2.1", 5000, "/a/b?c=d")),
    ("http://192.0.2.1:5000?x=/y", ("192.0.2.1", 5000, "/?x=/y")),
    ("http://192.0.2.1:/desc", ("192.0.2.1", 80, "/desc")),
])
def test_url_parts(url: str, parts: tuple[str, int, str]) -> None:
    u = http_lite.split_url(url)
    assert (u.host, u.port, u.target) == parts


@pytest.mark.parametrize("url, message", [
    ("https://192.0.2.1/", "not an http URL"),
    ("192.0.2.1/x", "not an http URL"),
    ("http://igd.example/", "host 'igd.example' is not an IPv4 address"),
    ("http://[2001:db8::1]/", r"host '\[2001:db8::1\]' is not an IPv4 address"),
    ("http://192.0.2.1.5/", "host '192.0.2.1.5' is not an IPv4 address"),
    ("http://192.0.2.1\x00/", r"host '192\.0\.2\.1\\x00' is not an IPv4 address"),
    ("http://192.0.2.1:0/", "bad port '0'"),
    ("http://192.0.2.1:65536/", "bad port '65536'"),
    ("http://192.0.2.1:８０/", "bad port '８０'"),
    ("http://user@192.0.2.1/", "URL with user information"),
    ("http://192.0.2.1/a b", "control characters, spaces or non-ASCII in the path"),
    ("http://192.0.2.1/a\r\nX-Injected: 1", "control characters, spaces or non-ASCII in the path"),
    ("http://192.0.2.1/caf\u00e9", "control characters, spaces or non-ASCII in the path"),
])
def test_url_refused(url: str, message: str) -> None:
    with pytest.raises(HttpError, match=f"^{message}$"):
        http_lite.split_url(url)


def test_request_header_with_a_line_break_is_refused_before_connecting(server: Server) -> None:
    with pytest.raises(HttpError, match="bad request header 'SOAPAction'"):
        _get(server, headers=(("SOAPAction", '"x"\r\nX-Injected: 1'),))
    time.sleep(0.1)
    assert server.requests == []
