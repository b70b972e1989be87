"""Run under mpiexec (2 ranks) by test_distributed_nccl_gate.py against the fake NCCL of
fakenccl.py: a GPU collective reaches NCCL only once its signature check over MPI has passed.
The call never blocks the host; a matched collective is enqueued as soon as the check
completes (the next collective, progress() or wait() finds out); a mismatched one never
reaches NCCL, and wait() raises the check's error naming both ranks' collectives."""
import sys
import time

import numpy as np

import fakenccl

sys.modules["cupy"] = fakenccl.module(devices=2)

import tracejit as tj  # noqa: E402
import tracejit.distributed as dist  # noqa: E402
from tracejit.distributed import DistError  # noqa: E402

dist.init_process_group("nccl", timeout=20)
RANK, W = dist.get_rank(), dist.get_world_size()


def nccl_calls():
    return [e for e in fakenccl.LOG if e[0] == "nccl"]


def gpu(a):
    return tj.tensor(a, device="cuda")


def check_matched_waits_for_the_check():
    """Rank 1 comes late: rank 0's call returns at once, and its collective is not enqueued
    until rank 1's record has arrived."""
    t = gpu(np.full(4, RANK + 1.0, np.float32))
    dist.barrier()
    if RANK == 1:
        time.sleep(0.5)
    fakenccl.LOG.clear()
    t0 = time.monotonic()
    w = dist.all_reduce(t, async_op=True)
    assert time.monotonic() - t0 < 0.25, "the host waited in the call"
    if RANK == 0:
        assert nccl_calls() == [], fakenccl.LOG          # rank 1 has not posted its check
    w.wait()
    assert len(nccl_calls()) == 1, fakenccl.LOG
    kinds = [e[0] for e in fakenccl.LOG]
    # the producers' event recorded at the call; the communication stream waits for it, NCCL,
    # the done event; the caller's stream waits for that: no host synchronization anywhere
    assert kinds == ["record", "wait_event", "nccl", "record", "wait_event"], fakenccl.LOG
    np.testing.assert_array_equal(t.to("cpu").numpy(), np.full(4, 3.0, np.float32))
    print("ok nccl_gate_matched", flush=True)


def check_progress_enqueues_without_wait():
    t = gpu(np.ones(3, np.float32))
    fakenccl.LOG.clear()
    w = dist.all_reduce(t, async_op=True)
    from tracejit.distributed.group import current
    backend = current().gpu_backend
    deadline = time.monotonic() + 10
    while not nccl_calls():
        assert time.monotonic() < deadline, "progress() never enqueued the collective"
        backend.progress()
        time.sleep(1e-3)
    w.wait()
    np.testing.assert_array_equal(t.to("cpu").numpy(), np.full(3, 2.0, np.float32))
    print("ok nccl_gate_progress", flush=True)


def check_mismatch_never_reaches_nccl():
    t = gpu(np.ones(4 if RANK == 0 else 2, np.float32))
    fakenccl.LOG.clear()
    w = dist.all_reduce(t, async_op=True)
    try:
        w.wait()
    except DistError as e:
        msg = str(e)
        assert "ranks issued different collectives at collective #" in msg, msg
        assert "rank 0: all_reduce (" in msg and "f32[4]" in msg and "f32[2]" in msg, msg
    else:
        raise AssertionError("a mismatched NCCL collective completed")
    assert nccl_calls() == [], fakenccl.LOG
    np.testing.assert_array_equal(t.to("cpu").numpy(), np.ones(4 if RANK == 0 else 2))
    try:                               # nothing behind it can be matched any more
        dist.all_reduce(gpu(np.ones(2, np.float32)))
    except DistError as e:
        assert "was not started: an earlier collective" in str(e), str(e)
    else:
        raise AssertionError("a collective after a failed one ran")
    assert nccl_calls() == [], fakenccl.LOG
    print("ok nccl_gate_mismatch", flush=True)


check_matched_waits_for_the_check()
check_progress_enqueues_without_wait()
check_mismatch_never_reaches_nccl()
