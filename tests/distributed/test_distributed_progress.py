"""How all-reduces started inside compiled code advance (progress_worker.py, 2 ranks): polled
between the program's steps where the cores are all taken, by a progress thread where one is
free (TRACEJIT_MPI_PROGRESS_THREAD decides here); and the rule that picks between them."""
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


class Comm:
    def __init__(self, size):
        self.size = size

    def Get_size(self):
        return self.size


@pytest.mark.parametrize("cores,ranks,threads,want", [
    (2, 2, "1", False),            # this CI machine: 2 ranks x 1 thread on 2 cores
    (8, 2, "1", True),
    (8, 2, "3", True),
    (8, 2, "4", False),
    (64, 8, "7", True),
    (4, 1, None, False),           # threads default to every core
])
def test_a_progress_thread_only_where_a_core_is_free(monkeypatch, cores, ranks, threads, want):
    monkeypatch.delenv("TRACEJIT_MPI_PROGRESS_THREAD", raising=False)
    monkeypatch.setattr(mpi_backend.os, "cpu_count", lambda: cores)
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", str(ranks))
    if threads is None:
        monkeypatch.delenv("TRACEJIT_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("TRACEJIT_NUM_THREADS", threads)
    assert mpi_backend.wants_progress_thread(Comm(ranks)) is want
    monkeypatch.setenv("TRACEJIT_MPI_PROGRESS_THREAD", "0" if want else "1")
    assert mpi_backend.wants_progress_thread(Comm(ranks)) is not want


def test_local_size_without_a_launcher_is_the_communicators(monkeypatch):
    for var in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(var, raising=False)
    assert mpi_backend.local_size(Comm(3)) == 3
