"""The worker opens and closes the extra UDP sockets a client asks for (RFC 6081 §3.3,
`ClientRole.socket_requests`) before sending what uses them, and tells the role where its
main socket is bound."""

from __future__ import annotations

import socket

from engine.proto.client import ClientRole
from engine.proto.rfc6081 import ExtensionSet
from engine.runtime.worker import Worker, WorkerResources


def _free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_extra_sockets_open_before_the_send_and_close_on_request():
    main = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    main.bind(("127.0.0.1", 0))
    main.setblocking(False)
    parent, child = socket.socketpair()
    role = ClientRole(server="203.0.113.10", token_bytes=bytes, extensions=ExtensionSet())
    res = WorkerResources(udp=[main], control=child)
    worker = Worker(None, role, res, clock=lambda: 1.0)  # type: ignore[arg-type]
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    try:
        # the role learnt its socket, and that extra sockets will be opened for it
        assert role.ext.local_port == main.getsockname()[1] and role.ext.extra_sockets
        port = _free_port()
        role.socket_requests.append((3, port))
        worker.send_udp([(3, b"bubble", peer.getsockname())])
        data, src = peer.recvfrom(100)
        assert data == b"bubble" and src == ("127.0.0.1", port)
        assert role.socket_requests == [] and res.udp[3] is not None
        role.socket_requests.append((3, 0))
        worker.send_udp([(0, b"x", peer.getsockname())])
        assert res.udp[3] is None
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", port))  # really closed
        probe.close()
        role.socket_requests.append((2, port))  # never the discovery socket's index
        worker.send_udp([(0, b"y", peer.getsockname())])
        assert worker.drops["extra_socket_refused"] == 1
    finally:
        worker.close()
        for s in (main, parent, child, peer):
            s.close()
