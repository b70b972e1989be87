"""Process groups beyond the default: new_group(ranks), group= on every collective (eager and
inside a compiled function), DDP(process_group=), and ranks that disagree on a group's
members, on 4 (oversubscribed) ranks."""
from dist_launch import launch, oks, report

CHECKS = ["groups_basics", "groups_compiled", "ddp_groups", "ddp_groups_compiled",
          "mismatched_ranks"]


def test_process_groups_on_four_ranks():
    proc = launch("groups_worker.py", CHECKS, nproc=4, timeout=150)
    assert proc.returncode == 0, report(proc)
    assert oks(proc) == {c: 4 for c in CHECKS}, report(proc)
