"""The NCCL backend enqueues a collective only after its signature check over MPI has passed
(tracejit/distributed/nccl_backend.py), against the fake NCCL of fakenccl.py: a mismatch
between ranks is an error naming both collectives and never reaches NCCL, and the call
itself never blocks the host."""
from dist_launch import launch, oks, report


def test_nccl_collectives_are_enqueued_only_after_their_check():
    proc = launch("nccl_gate_worker.py", [], nproc=2, timeout=60)
    assert proc.returncode == 0, report(proc)
    assert oks(proc) == {"nccl_gate_matched": 2, "nccl_gate_progress": 2,
                         "nccl_gate_mismatch": 2}, report(proc)
