"""How all-reduces started inside compiled code advance (progress_worker.py, 2 ranks): polled
between the program's steps (the default), or by the MPI backend's progress thread
(TRACEJIT_MPI_PROGRESS_THREAD=1)."""
import pytest

from dist_launch import launch, oks, report

from tracejit.distributed import mpi_backend


@pytest.mark.parametrize("thread", ["0", "1"])
def test_compiled_code_progresses_its_all_reduces(thread):
    proc = launch("progress_worker.py", [thread], nproc=2, timeout=90,
                  env={"TRACEJIT_MPI_PROGRESS_THREAD": thread})
    assert proc.returncode == 0, report(proc)
    assert oks(proc) == {"progress_compiled_step": 2, "progress_compiled_model": 2}, \
        report(proc)


@pytest.mark.parametrize("value,want", [(None, False), ("1", True), ("0", False), ("", False)])
def test_polling_is_the_default(monkeypatch, value, want):
    if value is None:
        monkeypatch.delenv("TRACEJIT_MPI_PROGRESS_THREAD", raising=False)
    else:
        monkeypatch.setenv("TRACEJIT_MPI_PROGRESS_THREAD", value)
    assert mpi_backend.wants_progress_thread() is want
