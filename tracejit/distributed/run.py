"""`python -m tracejit.distributed.run --nproc N script.py [args]`: start N ranks of a script
under MPI with the flags a user would otherwise have to know.

It runs `mpiexec -n N python -m mpi4py script.py args`: `-m mpi4py` turns an uncaught exception
on one rank into MPI_Abort of the whole job (with plain `python` the other ranks would wait
forever). With --timeout (or MPIEXEC_TIMEOUT), mpiexec ends a job that runs longer, and this
launcher kills it a few seconds after that if mpiexec itself is stuck. For Open MPI it adds
--oversubscribe when N exceeds the cores, allows running as root when that is who runs it (as
in containers), and on one machine skips the libfabric network probe (OMPI_MCA_btl=^ofi, about
1 s of start-up), and picks recursive doubling for the nonblocking all-reduce
(OMPI_MCA_coll_libnbc_iallreduce_algorithm=4: distributed/mpi_backend.py's mca_defaults says
why). Arguments after the script go to the script; `--mpiexec-args "..."` passes
more to mpiexec (a hostfile, for instance, on a cluster)."""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys

from .mpi_backend import IALLREDUCE_RDBL


def find_mpiexec(explicit: str | None = None) -> str:
    cands = [explicit, os.environ.get("MPIEXEC"),
             os.path.join(os.path.dirname(sys.executable), "mpiexec"), shutil.which("mpiexec")]
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise SystemExit("tracejit.distributed.run: no mpiexec found; pip install 'tracejit[mpi]' "
                     "(mpi4py and Open MPI), or pass --mpiexec PATH / set MPIEXEC")


def is_open_mpi(mpiexec: str) -> bool:
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Open MPI" in out or "OpenRTE" in out or "prte" in out.lower()


def build(nproc: int, script: list[str], mpiexec: str, extra: list[str],
          timeout: float | None) -> tuple[list[str], dict]:
    """The mpiexec command line and its environment."""
    env = dict(os.environ)
    cmd = [mpiexec, "-n", str(nproc)]
    if is_open_mpi(mpiexec):
        if nproc > (os.cpu_count() or 1):
            cmd.append("--oversubscribe")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
            env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        if not any(a.startswith(("--host", "-H", "--hostfile", "-hostfile", "--machinefile"))
                   for a in extra):
            env.setdefault("OMPI_MCA_btl", "^ofi")
        # read by MPI_Init, which the script may run before init_process_group sets it
        # (importing mpi4py.MPI itself): mpi_backend.mca_defaults
        env.setdefault(*IALLREDUCE_RDBL)
    if timeout is not None:
        env["MPIEXEC_TIMEOUT"] = str(max(1, int(timeout + 0.999)))
    cmd += extra + [sys.executable, "-m", "mpi4py"] + script
    return cmd, env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tracejit.distributed.run",
                                description="run a script on N ranks under MPI")
    p.add_argument("--nproc", "--nproc-per-node", "-n", type=int, default=1, dest="nproc")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds after which the whole job is ended (MPIEXEC_TIMEOUT)")
    p.add_argument("--mpiexec", default=None, help="the mpiexec to use")
    p.add_argument("--mpiexec-args", default="", help="more arguments for mpiexec")
    p.add_argument("script", help="the script (or -m module) and its arguments")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    if a.nproc < 1:
        p.error("--nproc must be at least 1")
    if a.timeout is None and os.environ.get("MPIEXEC_TIMEOUT"):
        a.timeout = float(os.environ["MPIEXEC_TIMEOUT"])
    cmd, env = build(a.nproc, [a.script] + a.args, find_mpiexec(a.mpiexec),
                     shlex.split(a.mpiexec_args), a.timeout)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=None if a.timeout is None else a.timeout + 10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        sys.stderr.write(f"tracejit.distributed.run: the job ran past --timeout "
                         f"{a.timeout:g} s and mpiexec did not end it; killed\n")
        return 124
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGTERM)
        return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
