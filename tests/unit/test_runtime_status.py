"""Status socket: creation rules, round trip, stale/in-use handling, the human format."""

from __future__ import annotations

import os
import socket
import stat
import threading

import pytest

from engine.runtime import status_client
from engine.runtime.loop import Loop
from engine.runtime.status_server import (
    StatusServer,
    StatusSocketError,
    create_listener,
    query,
    remove_socket,
)


def _serve(path, provider):
    listener = create_listener(path)
    loop = Loop()
    StatusServer(loop, listener, provider)
    stop = threading.Event()

    def run():
        while not stop.is_set():
            loop.run_once(max_wait=0.05)

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def close():
        stop.set()
        t.join(5)
        loop.close()
        listener.close()

    return close


def test_round_trip_and_mode(tmp_path):
    path = str(tmp_path / "sub" / "i.sock")
    close = _serve(path, lambda cmd: {"cmd": cmd, "n": 1} if cmd == "status" else None)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert query(path) == {"cmd": "status", "n": 1}
        assert "unknown command" in query(path, "peers")["error"]
        # a silent client does not block others
        idle = socket.socket(socket.AF_UNIX)
        idle.connect(path)
        assert query(path)["n"] == 1
        idle.close()
    finally:
        close()


def test_provider_exception_is_an_error_answer(tmp_path):
    path = str(tmp_path / "i.sock")

    def boom(cmd):
        raise RuntimeError("bad")

    close = _serve(path, boom)
    try:
        assert query(path) == {"error": "internal error: bad"}
    finally:
        close()


def test_stale_socket_is_replaced_and_live_one_refused(tmp_path):
    path = str(tmp_path / "i.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # file left behind, nobody listening
    live = create_listener(path)
    try:
        with pytest.raises(StatusSocketError,
                           match=rf"in use by another instance \(pid {os.getpid()}\)"):
            create_listener(path)
    finally:
        live.close()
        remove_socket(path)
    (tmp_path / "f").write_text("")
    with pytest.raises(StatusSocketError, match="not a socket"):
        create_listener(str(tmp_path / "f"))


def test_an_orphaned_worker_is_waited_for_a_live_holder_is_not(tmp_path):
    """An instance killed outright leaves its worker holding the status socket for a moment
    (it is signalled as its parent dies, then shuts down); supervisord restarts the instance
    at once.  The socket's creator (the parent) is gone, so the new instance waits for the
    worker to let go, up to `ORPHAN_EXIT_WAIT`; a holder that lives (this test process, the
    previous test) is refused at once."""
    import time

    from engine.runtime import status_server

    path = str(tmp_path / "i.sock")
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:  # pragma: no cover - the killed instance's parent: opens the socket
        sock = create_listener(path)
        worker = os.fork()
        if worker == 0:  # its worker: inherits it, outlives its parent by 0.3 s, then exits
            try:
                os.write(w, b"x")
                parent, give_up = os.getppid(), time.monotonic() + 5
                while os.getppid() == parent and time.monotonic() < give_up:
                    time.sleep(0.01)
                time.sleep(0.3)
                sock.close()
            finally:
                os._exit(0)
        os.read(r, 1)
        os._exit(0)  # dies: the worker is adopted by init
    os.close(w)
    os.waitpid(middle, 0)
    deadline = time.monotonic() + 5
    while status_server._listening_pid(path) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    holder = status_server._listening_pid(path)
    assert holder is not None and status_server._going_away(holder)
    sock = create_listener(path)  # waits for the orphan (it would raise at once otherwise)
    sock.close()
    remove_socket(path)
    os.close(r)
    assert status_server._listening_pid(path) is None
    assert not status_server._going_away(os.getpid())


STATUS = {
    "version": "0.1.0",
    "pid": 123,
    "role": "client",
    "relay_type": "client",
    "state": "qualified",
    "interface": "teredo",
    "address": "2001:0:c633:640a:8000:f227:bdf7:ffef",
    "mtu": 1280,
    "server": "203.0.113.10",
    "server2": "203.0.113.11",
    "mapped": {"ip": "198.51.100.1", "port": 50092},
    "nat": "restricted-or-symmetric",
    "started": 1000.0,
    "last_qualified": 1090.0,
    "bound": ["0.0.0.0:41234"],
    "peers": {"count": 2, "trusted": 1},
    "counters": {
        "udp_in_packets": 3,
        "udp_in_bytes": 3 * 1024 * 1024,
        "udp_out_packets": 1,
        "udp_out_bytes": 100,
        "tun_in_packets": 0,
        "tun_in_bytes": 0,
        "tun_out_packets": 0,
        "tun_out_bytes": 0,
        "drops": {"bad_auth": 2, "rate": 5},
    },
}


def test_format_status_reads_like_wg_show():
    text = status_client.format_status(STATUS, now=1100.0)
    lines = text.splitlines()
    assert lines[0] == "interface: teredo"
    assert "  state: qualified" in lines
    assert "  address: 2001:0:c633:640a:8000:f227:bdf7:ffef" in lines
    assert "  server: 203.0.113.10, 203.0.113.11" in lines
    assert "  mapped: 198.51.100.1:50092 (restricted-or-symmetric)" in lines
    assert "  peers: 2 (1 trusted)" in lines
    assert "  last qualified: 10s ago" in lines
    assert "  started: 1m 40s ago" in lines
    assert "  udp: 3.00 MiB received (3 pkts), 100 B sent (1 pkts)" in lines
    assert lines[-1] == "  drops: rate 5, bad_auth 2"


def test_main_prints_json_and_human(tmp_path, capsys):
    path = str(tmp_path / "i.sock")
    close = _serve(path, lambda cmd: STATUS)
    try:
        opts = type("O", (), {"status_socket": path})()
        assert status_client.main(opts, True) == 0
        import json

        assert json.loads(capsys.readouterr().out) == STATUS
        assert status_client.main(opts, False) == 0
        assert capsys.readouterr().out.startswith("interface: teredo\n")
    finally:
        close()


def test_main_without_instance_is_one_line_exit_1(tmp_path, capsys):
    opts = type("O", (), {"status_socket": str(tmp_path / "none.sock")})()
    assert status_client.main(opts, False) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "instance not running" in err
