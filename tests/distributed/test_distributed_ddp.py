"""DistributedDataParallel on 2 ranks, each on its shard, against single-process training on
the full batch (float64), after five optimizer steps: eager, compiled model, compiled step,
no_sync accumulation, unused parameters; the broadcast at construction; buffers broadcast
from rank 0 at each forward (eager and compiled); and the order of
events (bucket 0's all-reduce starts before backward has produced its last gradient; in a
compiled model's backward, before the kernels of the later gradients)."""
from dist_launch import launch, oks, report

CHECKS = ["broadcast", "eager", "compiled_model", "compiled_step", "no_sync", "unused",
          "unused_compiled", "overlap_order", "buffers", "buffers_compiled",
          "compiled_model_none", "compiled_model_zeros", "compiled_overlap_order",
          "compiled_model_autograd_grad", "compiled_wrappers"]


def test_ddp_matches_full_batch_training():
    proc = launch("ddp_worker.py", CHECKS, nproc=2, timeout=150)
    assert proc.returncode == 0, report(proc)
    assert oks(proc) == {c: 2 for c in CHECKS}, report(proc)
