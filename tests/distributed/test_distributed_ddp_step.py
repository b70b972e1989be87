"""A compiled DDP training step (tj.compile around forward, backward and the optimizer) on 2
ranks, each on its shard, against single-process training on the full batch (float64), after
five steps: SGD with momentum and AdamW, parameters larger than a bucket and all in one bucket,
no_sync accumulation, a parameter unused in some steps (find_unused_parameters=True), a
gradient hook, clip_grad_norm_ before the optimizer, gradient_as_bucket_view; and the order of
its events at run time (bucket 0's all-reduce starts on the gradients the program wrote in
place, before backward's last GEMM)."""
from dist_launch import launch, oks, report

CHECKS = ["sgd", "adamw", "one_bucket", "hook", "no_sync", "unused", "order", "clip", "as_view"]


def test_compiled_ddp_step_matches_full_batch_training():
    proc = launch("ddp_step_worker.py", CHECKS, nproc=2, timeout=150)
    assert proc.returncode == 0, report(proc)
    assert oks(proc) == {c: 2 for c in CHECKS}, report(proc)
