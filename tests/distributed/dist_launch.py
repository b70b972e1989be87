"""Launch a worker script on N ranks from pytest: mpiexec (through the command line that
`python -m tracejit.distributed.run` builds) with MPIEXEC_TIMEOUT and a subprocess timeout, so
that a hang fails fast. Skips cleanly where MPI is not installed (pip install 'tracejit[mpi]')."""
from __future__ import annotations

import os
import subprocess

import pytest

from tracejit.distributed import is_mpi_available
from tracejit.distributed import run as launcher

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)


def mpiexec() -> str:
    if not is_mpi_available():
        pytest.skip("mpi4py is not installed (pip install 'tracejit[mpi]')")
    try:
        return launcher.find_mpiexec()
    except SystemExit:
        pytest.skip("no mpiexec")


def launch(script: str, args: list[str], nproc: int = 2, timeout: float = 90,
           env: dict | None = None) -> subprocess.CompletedProcess:
    cmd, full_env = launcher.build(nproc, [os.path.join(HERE, script)] + args, mpiexec(), [],
                                   timeout)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [TESTS, HERE] + [p for p in [full_env.get("PYTHONPATH")] if p])
    full_env.update(env or {})
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True,
                          timeout=timeout + 30, errors="replace")


def oks(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """How many ranks printed "ok <name>" for each name."""
    counts: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("ok "):
            name = line[3:].split(":")[0]
            counts[name] = counts.get(name, 0) + 1
    return counts


def report(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n" \
           f"{proc.stderr[-4000:]}"

