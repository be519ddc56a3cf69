"""The per-instance status socket (docs/contracts.md §4), served inside the worker's loop.

The privileged parent creates and binds it (root-owned, mode 0660, so only root and the
socket's group may read an instance's state), and every worker generation inherits the
listening descriptor; the path therefore survives worker restarts and SIGHUP.

Whoever may connect must not be able to starve it, nor to slow the packet path that shares
the worker's loop (issue 9 flaw 8: sixteen idle connections used to lock every later client
out for five seconds, and an answer nobody read blocked the loop for a second):

* a client has `REQUEST_TIMEOUT` seconds from its connect to send a whole request line,
  however it trickles the bytes (slow-loris), and `REPLY_TIMEOUT` seconds to read the answer;
* at most `MAX_CLIENTS` connections are kept; a new one always gets a slot, taken from the
  oldest connection that has not sent its request yet (else the oldest of all), so a client
  that connects and asks at once is answered however many idle ones are open;
* nothing here ever blocks: the request is read and the answer written non-blocking, the part
  of an answer the socket cannot take yet waits for EPOLLOUT.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Callable

from engine.runtime.loop import Loop, Timer

MAX_REQUEST = 256
MAX_CLIENTS = 32
"""Connections kept at once (each is a descriptor and a timer; the worker has 1024 fds)."""
REQUEST_TIMEOUT = 2.0
"""Seconds from connect to a complete request line (a local client needs microseconds)."""
REPLY_TIMEOUT = 5.0
"""Seconds for a client to read its answer (`peers` can be a few hundred KB)."""
ACCEPT_BATCH = 64
"""Connections accepted per wake-up: a connect flood is served in bounded slices."""
LISTEN_BACKLOG = 64


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
        holder = _listening_pid(path)
        if holder is not None and holder > 0 and _going_away(holder):
            # The worker of an instance killed outright: the kernel signals it as its parent
            # dies (PR_SET_PDEATHSIG) and it exits within moments, but a supervisor restarting
            # the instance at once can be quicker (docs/operations.md).
            deadline = time.monotonic() + ORPHAN_EXIT_WAIT
            while holder is not None and time.monotonic() < deadline:
                time.sleep(0.02)
                holder = _listening_pid(path)
        if holder is not None:
            raise StatusSocketError(
                f"status socket {path} is in use by another instance (pid {holder})"
                if holder > 0 else f"status socket {path} is in use by another instance")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # stale: nobody is listening
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        old = os.umask(0o117)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o660)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise StatusSocketError(f"cannot create status socket {path}: {e.strerror}")
    return sock


ORPHAN_EXIT_WAIT = 2.0
"""Seconds a new instance waits for an orphaned worker to let go of its status socket."""


def _listening_pid(path: str) -> int | None:
    """The pid of the process listening on the unix socket `path` (0 when the kernel does
    not say), or None when nobody is."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
        cred = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    except OSError:
        return None
    finally:
        probe.close()
    return int.from_bytes(cred[:4], sys.byteorder)  # struct ucred: pid, uid, gid


def _going_away(pid: int) -> bool:
    """Whether the instance behind a listening socket is gone, its worker on its way out.

    `pid` is what the kernel reports for the listener: the process that created it, which
    for our engine is the privileged parent (the worker inherits the socket at the fork).
    Gone: that process no longer exists or is a zombie (killed, not yet reaped), or it was
    adopted by init (a worker holding a socket it created itself)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return True
    except (OSError, IndexError):
        return False
    return len(fields) > 1 and (fields[0] in (b"Z", b"X") or fields[1] == b"1")


def remove_socket(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class _Client:
    __slots__ = ("out", "reading", "sock", "timer")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = b""
        """The request read so far, then the part of the answer not written yet."""
        self.reading = True
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
        """By descriptor, in connect order (the oldest first: the eviction order)."""
        self.stats = {"answered": 0, "timeouts": 0, "evicted": 0}
        """What the abuse guards did, for the status answer (``status_socket``)."""
        loop.add_reader(listener.fileno(), self._on_accept)

    def _on_accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(self.clients) >= MAX_CLIENTS:
                self._evict()
            conn.setblocking(False)
            client = _Client(conn)
            fd = conn.fileno()
            self.clients[fd] = client
            client.timer = self.loop.call_later(REQUEST_TIMEOUT, lambda fd=fd: self._expire(fd))
            self.loop.add_reader(fd, lambda fd=fd: self._on_readable(fd))

    def _evict(self) -> None:
        """Make room for a new client: the oldest that has not asked yet, else the oldest.

        A new connection is the one most likely to be a real client about to ask; the idle
        ones that filled the table are what a starving attack is made of.
        """
        victim = next((fd for fd, c in self.clients.items() if c.reading), None)
        if victim is None:
            victim = next(iter(self.clients))
        self.stats["evicted"] += 1
        self._close(victim)

    def _expire(self, fd: int) -> None:
        if fd in self.clients:
            self.stats["timeouts"] += 1
            self._close(fd)

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
        client.out += data
        if b"\n" not in client.out:
            if len(client.out) >= MAX_REQUEST:
                self._reply(fd, {"error": "request too long"})
            return
        command = client.out.split(b"\n", 1)[0].strip().decode("ascii", "replace")
        try:
            answer = self.provider(command)
        except Exception as e:  # a status bug must not kill the worker
            answer = {"error": f"internal error: {e}"}
        if answer is None:
            answer = {"error": f"unknown command {command!r}"}
        self._reply(fd, answer)

    def _reply(self, fd: int, answer: dict) -> None:
        """Write what the socket takes now; the rest when it can take more, within
        `REPLY_TIMEOUT`."""
        client = self.clients.get(fd)
        if client is None:
            return
        self.stats["answered"] += 1
        client.reading = False
        client.out = json.dumps(answer, separators=(",", ":"), default=str).encode() + b"\n"
        self.loop.remove_reader(fd)  # one request per connection: the rest is not read
        if client.timer is not None:
            client.timer.cancel()
        if self._write(fd, client):
            client.timer = self.loop.call_later(REPLY_TIMEOUT, lambda: self._expire(fd))
            self.loop.add_writer(fd, lambda: self._on_writable(fd))

    def _write(self, fd: int, client: _Client) -> bool:
        """Send without blocking; True while part of the answer is left."""
        try:
            sent = client.sock.send(client.out)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self._close(fd)
            return False
        client.out = client.out[sent:]
        if client.out:
            return True
        self._close(fd)
        return False

    def _on_writable(self, fd: int) -> None:
        client = self.clients.get(fd)
        if client is not None:
            self._write(fd, client)

    def _close(self, fd: int) -> None:
        client = self.clients.pop(fd, None)
        if client is None:
            return
        if client.timer is not None:
            client.timer.cancel()
        self.loop.remove_reader(fd)
        client.sock.close()

    def close_in_child(self) -> None:
        """In a forked child: close the connections without touching the epoll set, which
        the child shares with the process that forked it."""
        for client in self.clients.values():
            client.sock.close()
        self.clients.clear()

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
