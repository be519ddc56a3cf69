"""`Loop.run` (the worker's loop) against `run_once`'s contract: readers, heap timers, the
deadline source asked after the callbacks, `after_batch` after every wake-up, `stop()`."""

from __future__ import annotations

import os

from engine.runtime.loop import Loop


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_run_fires_deadline_rearms_and_flushes_after_each_wake_up():
    clock = FakeClock()
    loop = Loop(clock)
    r, w = os.pipe()
    os.set_blocking(r, False)
    log: list[str] = []
    deadline: list[float | None] = [None]

    def on_read() -> None:
        data = os.read(r, 100)
        log.append(f"read {data.decode()}")
        if data == b"arm":  # a callback re-arms the role's timer: the loop must see it
            deadline[0] = clock.t - 1  # already due
        elif data == b"stop":
            loop.stop()

    def fire(now: float) -> None:
        log.append("timer")
        deadline[0] = None

    def after() -> None:
        log.append("flush")
        if log.count("flush") == 1:
            os.write(w, b"arm")
        elif log[-2] == "timer":
            os.write(w, b"stop")

    loop.add_reader(r, on_read)
    loop.set_deadline_source(lambda: deadline[0], fire)
    loop.after_batch = after
    loop.call_at(clock.t, lambda: log.append("heap"))  # due at once
    loop.run()
    assert log == ["heap", "flush", "read arm", "timer", "flush", "read stop", "flush"]
    loop.close()
    os.close(r)
    os.close(w)


def test_run_waits_for_a_future_deadline_then_fires_it():
    """The timeout handed to epoll comes from the deadline source; a cancelled heap timer
    neither fires nor shortens the wait."""
    import time

    loop = Loop()
    fired: list[float] = []
    start = time.monotonic()
    deadline = [start + 0.05]

    def fire(now: float) -> None:
        fired.append(now)
        deadline[0] = None
        loop.stop()

    loop.set_deadline_source(lambda: deadline[0], fire)
    loop.call_later(0.0, lambda: fired.append(-1.0)).cancel()
    loop.run()
    assert len(fired) == 1 and fired[0] >= start + 0.05
    loop.close()
