"""Without TRACEJIT_DIST_DEBUG, every collective's signature is checked across ranks: sizes,
dtypes, ops and orders that differ give every rank an error naming each rank's collective
(MPI itself reports only some size pairs, and never which collective)."""
from dist_launch import launch, oks, report

WANT = {
    "sizes_silent": ["rank 0: all_reduce (f32[4], op=SUM)", "rank 1: all_reduce (f32[2], op=SUM)"],
    "sizes_truncated": ["rank 0: all_reduce (f32[4], op=SUM)",
                        "rank 1: all_reduce (f32[1004], op=SUM)"],
    "dtypes": ["rank 0: all_reduce (f32[4], op=SUM)", "rank 1: all_reduce (i32[4], op=SUM)"],
    "ops": ["rank 0: all_reduce (f32[4], op=SUM)", "rank 1: all_reduce (f32[4], op=MAX)"],
    "order": ["rank 0: all_reduce (f32[4], op=SUM)", "rank 1: broadcast (f32[4], src=0)"],
    "async_wait": ["rank 0: all_reduce (f64[3]", "rank 1: all_reduce (f64[4]"],
    "compiled": ["rank 0: all_reduce (in a compiled function, f32[3]",
                 "rank 1: all_reduce (in a compiled function, f32[4]"],
    "gather": ["rank 0: all_gather_into_tensor (f32[2] -> f32[4])",
               "rank 1: all_gather_into_tensor (f32[3] -> f32[6])"],
}


def test_mismatched_collectives_give_every_rank_an_error_naming_each_ranks_call():
    proc = launch("mismatch_worker.py", list(WANT), nproc=2, timeout=90)
    assert proc.returncode == 0, report(proc)
    assert oks(proc) == {c: 2 for c in WANT}, report(proc)
    for line in proc.stdout.splitlines():
        if line.startswith("ok "):
            name, msg = line[3:].split(": ", 1)
            assert "ranks issued different collectives at collective #1" in msg, line
            for w in WANT[name]:
                assert w in msg, line


def test_collectives_with_the_check_turned_off():
    """TRACEJIT_DIST_CHECK=0 (what bench/distributed.py compares against) posts the data
    collectives at once; they still give NumPy's results."""
    checks = ["all_reduce", "noncontiguous_async", "compiled"]
    proc = launch("collectives_worker.py", checks, nproc=2, env={"TRACEJIT_DIST_CHECK": "0"})
    assert proc.returncode == 0, report(proc)
    assert oks(proc) == {c: 2 for c in checks}, report(proc)
