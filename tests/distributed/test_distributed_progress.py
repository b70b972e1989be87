"""How all-reduces started inside compiled code advance (progress_worker.py, 2 ranks): by the
MPI backend's progress thread (the default), or polled between the program's steps
(TRACEJIT_MPI_PROGRESS_THREAD=0, and, thread on, those under TRACEJIT_MPI_PUMP_MIN_BYTES:
"small")."""
import pytest

from dist_launch import launch, oks, report

from tracejit.distributed import mpi_backend


@pytest.mark.parametrize("thread", ["0", "1", "small"])
def test_compiled_code_progresses_its_all_reduces(thread):
    env = {"TRACEJIT_MPI_PROGRESS_THREAD": "0" if thread == "0" else "1"}
    if thread == "small":       # (the worker's buckets are 0.5-18 KB: all under 1 MiB)
        env["TRACEJIT_MPI_PUMP_MIN_BYTES"] = str(1 << 20)
    proc = launch("progress_worker.py", [thread], nproc=2, timeout=90, env=env)
    assert proc.returncode == 0, report(proc)
    assert oks(proc) == {"progress_compiled_step": 2, "progress_compiled_model": 2}, \
        report(proc)


@pytest.mark.parametrize("value,want", [(None, True), ("1", True), ("0", False), ("", False)])
def test_the_progress_thread_is_the_default(monkeypatch, value, want):
    if value is None:
        monkeypatch.delenv("TRACEJIT_MPI_PROGRESS_THREAD", raising=False)
    else:
        monkeypatch.setenv("TRACEJIT_MPI_PROGRESS_THREAD", value)
    assert mpi_backend.wants_progress_thread() is want
