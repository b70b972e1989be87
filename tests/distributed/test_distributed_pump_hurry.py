"""The MPI progress thread (the pump) while a thread waits for a pumped collective whose peer
is late: it tests at once, then after naps that double at every test without news, from
PUMP_NAP_MIN_S to PUMP_NAP_MAX_S, so a late peer does not keep it testing every 20 us (each
test wakes a thread: 2-5 ms of CPU a step on the nanoGPT-small compiled step on a loaded
machine); the peer's arrival (its signature check passing) brings the shortest nap back.
Against a fake mpi4py."""
import threading
import time

import numpy as np

from tracejit.distributed import mpi_backend
from tracejit.distributed.base import ReduceOp

from fake_mpi_pump import pumped_backend


class Requests:
    """mpi4py's Request.Testall over requests that complete when `done` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.done = threading.Event()

    def Testall(self, reqs):          # noqa: N802  (mpi4py's spelling)
        self.calls += 1
        return self.done.is_set()


class LateCheck:
    def __init__(self) -> None:
        self.passed = threading.Event()

    def test(self):
        return self.passed.is_set()


def sleeps_of_the_pump(monkeypatch, be):
    """The pauses the pump thread sleeps (time.sleep in mpi_backend, on the pump's thread)."""
    naps: list = []
    real = time.sleep

    def sleep(s):
        if threading.current_thread() is be._pump:
            naps.append(s)
        real(s)
    monkeypatch.setattr(mpi_backend.time, "sleep", sleep)
    return naps


def test_a_long_wait_does_not_keep_the_pump_at_its_shortest_nap(monkeypatch):
    requests = Requests()
    be = pumped_backend(monkeypatch, requests)
    naps = sleeps_of_the_pump(monkeypatch, be)
    work = be.all_reduce_async(np.full(4, 2.0, np.float32), ReduceOp.SUM, "all_reduce (late)")
    try:
        threading.Timer(0.3, requests.done.set).start()
        work.wait(timeout=20)
        assert work.is_completed() and be._pump_waiters == 0
        # 0.3 s of waiting: the shortest naps only at first, then up to the longest one
        # (at the shortest nap throughout, thousands of tests)
        assert naps and naps[0] == mpi_backend.PUMP_NAP_MIN_S, naps[:5]
        assert max(naps) == mpi_backend.PUMP_NAP_MAX_S, naps
        # doubling at every test until the request completes (a last shortest nap may follow
        # that news): the longest nap after log2(max / min) + 1 naps, not after a millisecond
        # of the shortest ones
        grown = naps[:naps.index(mpi_backend.PUMP_NAP_MAX_S) + 1]
        assert grown == sorted(grown), grown
        # (a wait that begins while the pump is asleep is news too: a second shortest nap)
        lo, hi = mpi_backend.PUMP_NAP_MIN_S, mpi_backend.PUMP_NAP_MAX_S
        last_short = max(i for i, x in enumerate(grown) if x == lo)
        assert last_short <= 2, grown
        assert all(b == min(2 * a, hi) for a, b in zip(grown[last_short:],
                                                         grown[last_short + 1:])), grown
        assert len(grown) - last_short <= int(np.ceil(np.log2(hi / lo))) + 1, grown
        assert requests.calls < 0.3 / mpi_backend.PUMP_NAP_MAX_S + 40, requests.calls
    finally:
        requests.done.set()
        be.close()


def test_the_peers_arrival_brings_the_shortest_nap_back(monkeypatch):
    requests = Requests()
    be = pumped_backend(monkeypatch, requests)
    check = LateCheck()
    be.pg.take_check = lambda: check
    naps = sleeps_of_the_pump(monkeypatch, be)
    work = be.all_reduce_async(np.ones(4, np.float32), ReduceOp.SUM, "all_reduce (late peer)")
    waiter = threading.Thread(target=work.wait, kwargs={"timeout": 20})
    try:
        waiter.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and \
                not (naps and naps[-1] == mpi_backend.PUMP_NAP_MAX_S):
            time.sleep(0.005)
        assert naps[-1] == mpi_backend.PUMP_NAP_MAX_S, naps    # backed off while it waited
        seen = len(naps)
        check.passed.set()              # the peer is there: its data is posted
        while time.monotonic() < deadline and requests.calls < 3:
            time.sleep(0.001)
        requests.done.set()
        waiter.join(20)
        assert not waiter.is_alive() and work.is_completed()
        after = naps[seen:]
        # the nap that was under way when the check passed, then the shortest again
        assert mpi_backend.PUMP_NAP_MIN_S in after[:2], after
    finally:
        requests.done.set()
        check.passed.set()
        be.close()
