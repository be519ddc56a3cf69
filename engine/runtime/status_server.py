"""The per-instance status socket (docs/contracts.md §4), served inside the worker's loop.

The privileged parent creates and binds it (root-owned, mode 0660, so only root and the
socket's group may read an instance's state), and every worker generation inherits the
listening descriptor; the path therefore survives worker restarts and SIGHUP.  Requests are
one short line; a slow or silent client is dropped after a few seconds and never blocks the
packet path (the reply is written with a short blocking timeout, the request read
non-blocking).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
from collections.abc import Callable

from engine.runtime.loop import Loop, Timer

MAX_REQUEST = 256
MAX_CLIENTS = 16
CLIENT_TIMEOUT = 5.0


class StatusSocketError(Exception):
    """The status socket cannot be created; ``str()`` names the path."""


def create_listener(path: str) -> socket.socket:
    """Bind the unix socket at `path` (removing a stale one), mode 0660, listening."""
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    except OSError as e:
        raise StatusSocketError(f"cannot create directory {directory}: {e.strerror}")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise StatusSocketError(f"status socket {path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: nobody is listening
        else:
            raise StatusSocketError(f"status socket {path} is in use by another instance")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        old = os.umask(0o117)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o660)
        sock.listen(16)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise StatusSocketError(f"cannot create status socket {path}: {e.strerror}")
    return sock


def remove_socket(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class _Client:
    __slots__ = ("buf", "sock", "timer")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.timer: Timer | None = None


class StatusServer:
    """Answers ``status`` (and ``peers`` when the provider knows it) with one JSON line."""

    def __init__(
        self,
        loop: Loop,
        listener: socket.socket,
        provider: Callable[[str], dict | None],
    ) -> None:
        self.loop = loop
        self.listener = listener
        self.provider = provider
        self.clients: dict[int, _Client] = {}
        loop.add_reader(listener.fileno(), self._on_accept)

    def _on_accept(self) -> None:
        for _ in range(MAX_CLIENTS):
            try:
                conn, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(self.clients) >= MAX_CLIENTS:
                conn.close()
                continue
            conn.setblocking(False)
            client = _Client(conn)
            fd = conn.fileno()
            self.clients[fd] = client
            client.timer = self.loop.call_later(CLIENT_TIMEOUT, lambda fd=fd: self._close(fd))
            self.loop.add_reader(fd, lambda fd=fd: self._on_readable(fd))

    def _on_readable(self, fd: int) -> None:
        client = self.clients.get(fd)
        if client is None:
            return
        try:
            data = client.sock.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(fd)
            return
        if not data:
            self._close(fd)
            return
        client.buf += data
        if b"\n" not in client.buf:
            if len(client.buf) >= MAX_REQUEST:
                self._reply(fd, {"error": "request too long"})
            return
        command = client.buf.split(b"\n", 1)[0].strip().decode("ascii", "replace")
        try:
            answer = self.provider(command)
        except Exception as e:  # a status bug must not kill the worker
            answer = {"error": f"internal error: {e}"}
        if answer is None:
            answer = {"error": f"unknown command {command!r}"}
        self._reply(fd, answer)

    def _reply(self, fd: int, answer: dict) -> None:
        client = self.clients.get(fd)
        if client is None:
            return
        data = json.dumps(answer, separators=(",", ":"), default=str).encode() + b"\n"
        try:
            client.sock.settimeout(1.0)
            client.sock.sendall(data)
        except OSError:
            pass
        self._close(fd)

    def _close(self, fd: int) -> None:
        client = self.clients.pop(fd, None)
        if client is None:
            return
        if client.timer is not None:
            client.timer.cancel()
        self.loop.remove_reader(fd)
        client.sock.close()

    def close(self) -> None:
        for fd in list(self.clients):
            self._close(fd)
        self.loop.remove_reader(self.listener.fileno())


def query(path: str, command: str = "status", timeout: float = 5.0) -> dict:
    """Ask a running instance; raises OSError (connect) or ValueError (bad answer)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        sock.close()
    data = b"".join(chunks)
    if not data:
        raise ValueError("empty answer")
    answer = json.loads(data)
    if not isinstance(answer, dict):
        raise ValueError("answer is not a JSON object")
    return answer


__all__ = [
    "StatusServer",
    "StatusSocketError",
    "create_listener",
    "query",
    "remove_socket",
]
