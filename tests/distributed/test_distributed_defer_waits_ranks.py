"""On 2 ranks, a compiled DDP step (AdamW without clipping, two buckets) runs bucket 0's
parameter updates before it waits for bucket 1's all-reduce (ir/defer_waits.py): the order of
the plan it runs and of its collectives at run time, each all-reduce's interval as recorded
(started, seen complete, by the end of its wait), and the parameters after five steps on each
rank's shard equal to single-process training on the full batch (defer_waits_worker.py)."""
from dist_launch import launch, oks, report

CHECKS = ["order"]


def test_compiled_step_updates_bucket_0_before_waiting_for_bucket_1():
    proc = launch("defer_waits_worker.py", CHECKS, nproc=2, timeout=120)
    assert proc.returncode == 0, report(proc)
    assert oks(proc) == {c: 2 for c in CHECKS}, report(proc)
