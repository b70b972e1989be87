"""An MPI backend with its progress thread on, over a fake mpi4py whose requests complete
when a test says (the pump tests' shared setup)."""
import types

from tracejit.distributed import mpi_backend


class FakeComm:
    def Iallreduce(self, sendbuf, recvbuf, op):    # noqa: N802  (mpi4py's spelling)
        return object()

    def Free(self):                                # noqa: N802
        pass


def pumped_backend(monkeypatch, requests, error_type: type = RuntimeError):
    """An MPIBackend of rank 0 in a world of 2 whose mpi4py `Request.Testall` is `requests`."""
    mpi = types.SimpleNamespace(
        THREAD_MULTIPLE=3, Query_thread=lambda: 3, Request=requests, Exception=error_type,
        IN_PLACE=None, SUM="sum", PROD="prod", MAX="max", MIN="min", LOR="lor", LAND="land",
        FLOAT="f32", DOUBLE="f64", INT32_T="i32", INT64_T="i64", C_BOOL="bool",
        UINT8_T="u8", INT8_T="i8", INT16_T="i16")
    monkeypatch.setattr(mpi_backend, "_mpi", lambda: mpi)
    monkeypatch.setenv("TRACEJIT_MPI_PROGRESS_THREAD", "1")
    pg = types.SimpleNamespace(rank=0, size=2, timeout_s=30.0, comm=FakeComm(),
                               check_comm=None, take_check=lambda: None)
    be = mpi_backend.MPIBackend(pg)
    assert be.pump
    return be
