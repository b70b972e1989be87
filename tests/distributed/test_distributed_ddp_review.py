"""DDP with a compiled model whose buckets must not be averaged inside the compiled backward:
a parameter that also gets a gradient from elsewhere in the same backward, or that has a
gradient hook; and a DDP dropped between forward and backward, whose reducer must stop
averaging (ddp_review_worker.py, on 2 ranks)."""
from dist_launch import launch, oks, report


def test_compiled_model_buckets_average_every_contribution():
    proc = launch("ddp_review_worker.py", [])
    assert proc.returncode == 0, report(proc)
    want = {f"{k}_{m}": 2 for k in ("penalty", "hook", "dropped")
            for m in ("eager", "compiled")}
    assert oks(proc) == want, report(proc)
