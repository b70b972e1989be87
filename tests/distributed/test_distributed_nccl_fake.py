"""The NCCL backend's plumbing on 2 ranks against a fake NCCL that moves the same buffers over
MPI (fakenccl.py): collectives run on a dedicated stream that waits for an event of the
producers' stream, `wait()` orders the caller's stream after them, nothing synchronizes the
host; DDP on "cuda" tensors averages the gradients through it."""
from dist_launch import launch, oks, report


def test_nccl_backend_plumbing_against_a_fake_nccl():
    proc = launch("nccl_worker.py", ["2", "collectives", "ddp", "groups", "default"], nproc=2)
    assert proc.returncode == 0, report(proc)
    assert oks(proc) == {"nccl_collectives": 2, "nccl_ddp": 2, "nccl_groups": 2,
                         "nccl_default_backend": 2}, report(proc)


def test_nccl_watchdog_ends_a_job_whose_collective_never_completes():
    """The host never waits for NCCL; the watchdog must notice the stuck collective."""
    import os
    import subprocess
    import sys
    import time

    from dist_launch import HERE, TESTS, mpiexec
    mpiexec()                            # the fake communicator bootstraps through mpi4py
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, HERE]), OMPI_MCA_btl="^ofi")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, os.path.join(HERE, "nccl_hang_worker.py")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, report(proc)
    assert "all_reduce #1 (f32[4], op=SUM) did not complete on the GPU within 2 s" in \
        proc.stderr, report(proc)
    assert "unreachable" not in proc.stdout
    assert time.monotonic() - t0 < 50
