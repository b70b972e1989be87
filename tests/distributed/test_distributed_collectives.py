"""Every collective, for every op and dtype, against NumPy, on 2 ranks and on 4 oversubscribed
ranks (one launch each, several checks per launch)."""
import os
import subprocess
import sys

from dist_launch import HERE, TESTS, launch, mpiexec, oks, report  # noqa: F401

CHECKS = ["all_reduce", "noncontiguous_async", "broadcast", "gathers", "reduce_scatter",
          "objects_barrier", "compiled", "rank_info"]


def test_every_collective_on_two_ranks():
    proc = launch("collectives_worker.py", CHECKS, nproc=2)
    assert proc.returncode == 0, report(proc)
    assert oks(proc) == {c: 2 for c in CHECKS}, report(proc)


def test_collectives_on_four_oversubscribed_ranks_through_the_launcher():
    """`python -m tracejit.distributed.run --nproc 4` on 2 cores: the launcher adds the flags
    (oversubscription, running as root, the timeout)."""
    mpiexec()
    checks = ["all_reduce", "gathers", "objects_barrier"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, HERE]))
    for var in ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "OMPI_MCA_btl"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-m", "tracejit.distributed.run", "--nproc", "4",
                           "--timeout", "90", os.path.join(HERE, "collectives_worker.py")]
                          + checks, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, report(proc)
    assert oks(proc) == {c: 4 for c in checks}, report(proc)
