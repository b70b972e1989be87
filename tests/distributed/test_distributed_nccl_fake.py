"""The NCCL backend's plumbing on 2 ranks against a fake NCCL that moves the same buffers over
MPI (fakenccl.py): collectives run on a dedicated stream that waits for an event of the
producers' stream, `wait()` orders the caller's stream after them, nothing synchronizes the
host; DDP on "cuda" tensors averages the gradients through it."""
from dist_launch import launch, oks, report


def test_nccl_backend_plumbing_against_a_fake_nccl():
    proc = launch("nccl_worker.py", ["2", "collectives", "ddp"], nproc=2)
    assert proc.returncode == 0, report(proc)
    assert oks(proc) == {"nccl_collectives": 2, "nccl_ddp": 2}, report(proc)
