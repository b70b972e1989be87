"""The MPI backend's progress thread (the pump that advances all-reduces started inside
compiled code) against a fake MPI whose request completes when the test says: while nobody
waits it tests rarely (its nap doubles up to PUMP_NAP_MAX_S), so that it leaves the core to
the kernels it overlaps with; a waiter is answered once the request completes, and a timed-out
waiter leaves the pump as it found it."""
import threading
import time

import numpy as np
import pytest

from tracejit.distributed import mpi_backend
from tracejit.distributed.base import DistError, ReduceOp

from fake_mpi_pump import pumped_backend


class FakeRequests:
    """mpi4py's Request.Testall over requests that complete when `done` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.done = threading.Event()

    def Testall(self, reqs):          # noqa: N802  (mpi4py's spelling)
        self.calls += 1
        return self.done.is_set()


def make_backend(monkeypatch):
    requests = FakeRequests()
    return pumped_backend(monkeypatch, requests), requests


def test_pump_backs_off_while_nobody_waits(monkeypatch):
    be, requests = make_backend(monkeypatch)
    a = np.ones(8, np.float32)
    work = be.all_reduce_async(a, ReduceOp.SUM, "all_reduce (test)")
    try:
        time.sleep(0.2)
        # each untimed test is followed by a nap of at least min(20 us * 2**k, 1 ms): within
        # 0.2 s at most ~7 + 200 tests (a pump testing every 20 us makes thousands)
        assert 1 <= requests.calls <= 7 + 0.2 / mpi_backend.PUMP_NAP_MAX_S + 20, requests.calls
        requests.done.set()
        work.wait()
        assert work.is_completed()
        assert be._pump_waiters == 0
    finally:
        requests.done.set()
        be.close()


def test_a_waiter_is_answered_when_the_request_completes(monkeypatch):
    be, requests = make_backend(monkeypatch)
    a = np.full(4, 6.0, np.float32)
    work = be.all_reduce_async(a, ReduceOp.AVG, "all_reduce (test)")
    try:
        time.sleep(0.05)               # the pump has backed off
        threading.Timer(0.05, requests.done.set).start()
        work.wait(timeout=20)
        np.testing.assert_array_equal(a, np.full(4, 3.0, np.float32))   # AVG over 2 ranks
        assert be._pump_waiters == 0
        # the next collective is tested again at once, not after the last long nap
        calls = requests.calls
        requests.done.clear()
        work2 = be.all_reduce_async(np.ones(2, np.float32), ReduceOp.SUM, "all_reduce (2)")
        requests.done.set()
        work2.wait(timeout=20)
        assert requests.calls > calls
    finally:
        requests.done.set()
        be.close()


def test_a_timed_out_waiter_names_the_collective_and_leaves_the_pump_as_it_was(monkeypatch):
    be, requests = make_backend(monkeypatch)
    work = be.all_reduce_async(np.ones(2, np.float32), ReduceOp.SUM, "all_reduce (stuck)")
    try:
        with pytest.raises(DistError, match=r"timed out after 0.1 s in all_reduce \(stuck\)"):
            work.wait(timeout=0.1)
        assert be._pump_waiters == 0
    finally:
        requests.done.set()
        be.close()
