"""The MPI backend's pump (the progress thread for all-reduces started inside compiled code),
against a fake MPI whose requests complete when the test says: a bucket started while others
are in flight does not wake the pump (on 2 ranks sharing 2 cores the wake-up took the core
from the compute thread); after a waiter timed out the pump still finishes the others; an MPI
error reaches the waiter."""
import threading
import time

import numpy as np
import pytest

from tracejit.distributed.base import DistError, ReduceOp

from fake_mpi_pump import pumped_backend


class MPIError(RuntimeError):
    def Get_error_string(self):                    # noqa: N802
        return str(self)


class FakeRequests:
    """mpi4py's Request.Testall over requests that complete when `done` is set; it records
    which thread made each test, and refuses two threads testing at once (MPI forbids it)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.threads: list = []
        self.completed_by: list = []
        self.busy = threading.Lock()
        self.overlapped = False
        self.fail = False

    def Testall(self, reqs):          # noqa: N802  (mpi4py's spelling)
        if not self.busy.acquire(blocking=False):
            self.overlapped = True
            return False
        try:
            time.sleep(20e-6)          # (a window for a second tester to collide in)
            me = threading.current_thread()
            self.threads.append(me)
            if self.fail:
                raise MPIError("message truncated")
            if self.done.is_set():
                self.completed_by.append(me)
                return True
            return False
        finally:
            self.busy.release()


def make_backend(monkeypatch):
    requests = FakeRequests()
    return pumped_backend(monkeypatch, requests, MPIError), requests


def count_notifies(be):
    calls = []
    notify = be._pump_cv.notify

    def counted(n=1):
        calls.append(n)
        notify(n)
    be._pump_cv.notify = counted
    return calls


def test_a_bucket_started_while_others_are_in_flight_does_not_wake_the_pump(monkeypatch):
    be, requests = make_backend(monkeypatch)
    notified = count_notifies(be)
    try:
        w1 = be.all_reduce_async(np.ones(4, np.float32), ReduceOp.SUM, "all_reduce (b0)")
        assert len(notified) == 1          # the pump had nothing in flight: it must look
        w2 = be.all_reduce_async(np.ones(4, np.float32), ReduceOp.SUM, "all_reduce (b1)")
        w3 = be.all_reduce_async(np.ones(4, np.float32), ReduceOp.SUM, "all_reduce (b2)")
        assert len(notified) == 1, notified
        requests.done.set()
        for w in (w1, w2, w3):
            w.wait(timeout=20)
        assert be._pumped == []
    finally:
        requests.done.set()
        be.close()


def test_the_pump_resumes_for_the_others_after_a_waiter_returns(monkeypatch):
    be, requests = make_backend(monkeypatch)
    w1 = be.all_reduce_async(np.ones(2, np.float32), ReduceOp.SUM, "all_reduce (b0)")
    w2 = be.all_reduce_async(np.ones(2, np.float32), ReduceOp.SUM, "all_reduce (b1)")
    try:
        with pytest.raises(DistError, match=r"timed out after 0.05 s in all_reduce \(b0\)"):
            w1.wait(timeout=0.05)
        assert be._pump_waiters == 0
        pump = be._pump                            # (other tests may have left theirs)
        requests.done.set()
        for _ in range(2000):                     # nobody waits: only the pump can finish them
            if w2.is_completed():
                break
            time.sleep(0.005)
        assert w1.is_completed() and w2.is_completed()
        assert requests.completed_by[-1] is pump
        assert not requests.overlapped
    finally:
        requests.done.set()
        be.close()


def test_an_mpi_error_reaches_the_waiter_that_drives(monkeypatch):
    be, requests = make_backend(monkeypatch)
    work = be.all_reduce_async(np.ones(2, np.float32), ReduceOp.SUM, "all_reduce (bad)")
    try:
        requests.fail = True
        with pytest.raises(DistError, match=r"rank 0 of 2: MPI failed in all_reduce \(bad\): "
                                            r"message truncated"):
            work.wait(timeout=20)
        assert be._pump_waiters == 0
    finally:
        requests.done.set()
        be.close()
