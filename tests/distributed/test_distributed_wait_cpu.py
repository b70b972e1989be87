"""What a collective costs the CPU where it needs no work: a world of 1 makes no MPI call and
installs no per-step progress hook in compiled code, and a blocking wait on MPI stops testing
in a loop (each test of a transfer costs tens of microseconds, taken from the peer on shared
cores) once it has lasted WAIT_SPIN_S, then tests between short sleeps, with its deadline."""
import types

import numpy as np
import pytest

from tracejit.distributed import mpi_backend, traced
from tracejit.distributed.base import DistError, ReduceOp
from tracejit.runtime.backend import STEP_HOOKS


class NoCalls:
    """A communicator that must not be used."""

    def Iallreduce(self, *args):                   # noqa: N802  (mpi4py's spelling)
        raise AssertionError("a world of 1 called MPI_Iallreduce")

    def Free(self):                                # noqa: N802
        pass


def fake_mpi(monkeypatch, requests=None):
    mpi = types.SimpleNamespace(
        THREAD_MULTIPLE=3, Query_thread=lambda: 3, Request=requests, Exception=RuntimeError,
        IN_PLACE=None, SUM="sum", PROD="prod", MAX="max", MIN="min", LOR="lor", LAND="land",
        FLOAT="f32", DOUBLE="f64", INT32_T="i32", INT64_T="i64", C_BOOL="bool",
        UINT8_T="u8", INT8_T="i8", INT16_T="i16")
    monkeypatch.setattr(mpi_backend, "_mpi", lambda: mpi)
    return mpi


def backend(monkeypatch, size, comm, requests=None):
    fake_mpi(monkeypatch, requests)
    pg = types.SimpleNamespace(rank=0, size=size, timeout_s=30.0, comm=comm,
                               check_comm=None, take_check=lambda: None)
    return mpi_backend.MPIBackend(pg)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64, np.bool_])
def test_an_mpi_world_of_one_reduces_without_mpi(monkeypatch, dtype):
    be = backend(monkeypatch, 1, NoCalls())
    for op in (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.MAX, ReduceOp.MIN, ReduceOp.PRODUCT):
        if op is ReduceOp.AVG and dtype in (np.int64, np.bool_):
            continue
        a = np.array([3, 0, 1, 2], dtype)
        want = a.copy()
        w = be.all_reduce(a, op, f"all_reduce (test {op})")
        assert w.is_completed()
        w.wait()
        np.testing.assert_array_equal(a, want)
        assert a.dtype == want.dtype


def test_a_compiled_bucket_on_a_world_of_one_needs_no_progress_hook(world_of_one):
    flat = np.arange(6, dtype=np.float32)
    pieces = [flat[:4].reshape(2, 2), flat[4:]]
    before = list(STEP_HOOKS.fns)
    ticket = traced._run_bucket_start(flat, pieces, op=1)      # op 1: AVG
    # nothing to advance between the program's steps (it had a hook on every later step)
    assert STEP_HOOKS.fns == before
    out = traced._run_bucket_wait(np.array(ticket), pieces, op=1)
    assert out is flat                                          # reduced in place: as it was
    np.testing.assert_array_equal(out, np.arange(6, dtype=np.float32))
    assert not traced._PENDING


class SlowRequests:
    """Testall on a request that completes at `done_at` of a fake clock; each test costs
    TEST_S of it (a test that moves data costs tens of microseconds)."""
    TEST_S = 20e-6

    def __init__(self, clock, done_at):
        self.clock, self.done_at = clock, done_at
        self.calls = 0
        self.calls_before_sleep = None

    def Testall(self, reqs):                       # noqa: N802
        self.calls += 1
        self.clock.now += self.TEST_S
        return self.clock.now >= self.done_at


class Clock:
    def __init__(self, requests_box):
        self.now = 0.0
        self.sleeps = []
        self.box = requests_box

    def monotonic(self):
        return self.now

    def sleep(self, s):
        req = self.box[0]
        if req.calls_before_sleep is None:
            req.calls_before_sleep = req.calls
        self.sleeps.append(s)
        self.now += s


class Comm:
    def Iallreduce(self, *args):                   # noqa: N802
        return object()

    def Free(self):                                # noqa: N802
        pass


def waited(monkeypatch, done_at, timeout=None):
    box = []
    clock = Clock(box)
    requests = SlowRequests(clock, done_at)
    box.append(requests)
    monkeypatch.setenv("TRACEJIT_MPI_PROGRESS_THREAD", "0")
    be = backend(monkeypatch, 2, Comm(), requests)
    monkeypatch.setattr(mpi_backend, "time", types.SimpleNamespace(
        monotonic=clock.monotonic, sleep=clock.sleep, perf_counter=clock.monotonic))
    w = be.all_reduce(np.ones(4, np.float32), ReduceOp.SUM, "all_reduce #1 (test)")
    try:
        w.wait(timeout)
    finally:
        be.close()
    return requests, clock


def test_a_long_wait_sleeps_between_tests(monkeypatch):
    requests, clock = waited(monkeypatch, done_at=0.05)
    spin = mpi_backend.WAIT_SPIN_S
    # tests back to back only for WAIT_SPIN_S (it spun 2000 tests, 40 ms of such tests)
    assert requests.calls_before_sleep <= spin / SlowRequests.TEST_S + 2, \
        requests.calls_before_sleep
    # then sleeps of WAIT_NAP_S while the wait is young, longer ones later, at most the cap
    assert clock.sleeps[0] == mpi_backend.WAIT_NAP_S
    assert max(clock.sleeps) <= mpi_backend.PUMP_NAP_MAX_S
    assert clock.sleeps[-1] > clock.sleeps[0]
    assert clock.now >= 0.05


def test_a_short_wait_only_tests(monkeypatch):
    requests, clock = waited(monkeypatch, done_at=mpi_backend.WAIT_SPIN_S / 4)
    assert clock.sleeps == [] and requests.calls >= 1


def test_a_wait_past_its_deadline_raises(monkeypatch):
    with pytest.raises(DistError, match=r"timed out after 0.5 s in all_reduce #1 \(test\)"):
        waited(monkeypatch, done_at=1e9, timeout=0.5)


def test_wait_naps_grow_after_the_short_phase():
    nap = mpi_backend.wait_nap
    assert nap(0.0) == nap(mpi_backend.WAIT_SHORT_S / 2) == mpi_backend.WAIT_NAP_S
    later = [nap(mpi_backend.WAIT_SHORT_S + k * 1e-3) for k in range(12)]
    assert later == sorted(later) and later[-1] == mpi_backend.PUMP_NAP_MAX_S
    assert nap(1e6) == mpi_backend.PUMP_NAP_MAX_S


class FlagRequests:
    def __init__(self):
        self.done = False

    def Testall(self, reqs):                       # noqa: N802
        return self.done


def test_a_polled_collective_is_timed_when_a_poll_saw_it_complete(monkeypatch):
    """Work.done_at (bench/distributed.py's hidden-share timestamps) is the poll that saw the
    transfer complete, not the later wait."""
    import time
    requests = FlagRequests()
    monkeypatch.setenv("TRACEJIT_MPI_PROGRESS_THREAD", "0")
    be = backend(monkeypatch, 2, Comm(), requests)
    try:
        w = be.all_reduce(np.ones(4, np.float32), ReduceOp.SUM, "all_reduce #1 (test)")
        be.progress()                  # a poll between compiled steps: still in flight
        requests.done = True
        t0 = time.perf_counter()
        be.progress()                  # this poll sees it complete
        t1 = time.perf_counter()
        time.sleep(0.02)
        w.wait()
        assert w.started_at <= t0 <= w.done_at <= t1, (w.started_at, t0, w.done_at, t1)
    finally:
        be.close()
