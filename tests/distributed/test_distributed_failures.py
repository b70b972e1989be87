"""Never a hang, never silent garbage: each failure mode ends the whole job with a non-zero
exit and a clear error naming the ranks and the operation, well within the timeout."""
import time

from dist_launch import launch, oks, report


def test_a_rank_that_raises_aborts_the_job():
    t0 = time.monotonic()
    proc = launch("failures_worker.py", ["raises"], timeout=60)
    assert proc.returncode != 0, report(proc)
    assert "boom on rank 1" in proc.stderr, report(proc)
    assert "rank 1 of 2 raised ValueError; aborting all 2 ranks" in proc.stderr, report(proc)
    assert "unreachable" not in proc.stdout
    assert time.monotonic() - t0 < 60


def test_a_rank_that_dies_ends_the_job():
    proc = launch("failures_worker.py", ["dies"], timeout=60)
    assert proc.returncode != 0, report(proc)
    assert "unreachable" not in proc.stdout, report(proc)


def test_a_rank_that_never_joins_times_out_with_the_operation_named():
    t0 = time.monotonic()
    proc = launch("failures_worker.py", ["never_joins"], timeout=60)
    took = time.monotonic() - t0
    assert proc.returncode != 0, report(proc)
    assert "rank 0 of 2 timed out after 3 s in all_reduce #1 (f32[4], op=SUM)" in proc.stderr, \
        report(proc)
    assert "ranks [1] did not join" in proc.stderr, report(proc)
    assert took < 55, f"the 3 s deadline took {took:.0f} s to end the job"


def test_failures_every_rank_detects():
    """Two ranks on one GPU with NCCL, a GPU tensor on the MPI backend, collectives in
    different orders or shapes (TRACEJIT_DIST_DEBUG=1), different models at DDP construction,
    unused parameters without find_unused_parameters: every rank gets the error."""
    proc = launch("failures_worker.py", ["symmetric"], timeout=60,
                  env={"TRACEJIT_DIST_DEBUG": "1"})
    assert proc.returncode != 0, report(proc)
    want = ["two_ranks_one_gpu", "gpu_on_mpi", "different_order", "different_shapes",
            "different_params", "unused_params"]
    assert oks(proc) == {w: 2 for w in want}, report(proc)
    assert "unreachable" not in proc.stdout


def test_a_rank_that_never_joins_a_compiled_ddp_step_times_out():
    """The wait inside a compiled training step has the same deadline as eager collectives."""
    proc = launch("failures_worker.py", ["never_joins_compiled"], timeout=60)
    assert proc.returncode != 0, report(proc)
    assert "rank 0 of 2 timed out after 3 s in all_reduce" in proc.stderr, report(proc)
    assert "started in a compiled function" in proc.stderr, report(proc)


def test_different_sizes_without_debug_give_an_error_naming_the_operation():
    """Without TRACEJIT_DIST_DEBUG the signature check (tracejit/distributed/sigcheck.py)
    stops f32[4] against f32[1004] before MPI sees the pair, and the uncaught error ends the
    job (before the check, only Open MPI's own truncation error named it)."""
    proc = launch("failures_worker.py", ["different_sizes"], timeout=60)
    assert proc.returncode != 0, report(proc)
    assert "ranks issued different collectives at collective #1" in proc.stderr, report(proc)
    assert "rank 1: all_reduce (f32[1004], op=SUM)" in proc.stderr, report(proc)
