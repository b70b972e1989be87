"""A fake `cupy.cuda.nccl` on top of the strict fake CuPy (tests/fakecupy.py), for testing the
NCCL backend's plumbing on machines without GPUs: the communicator moves the very buffers it
is given (device pointers, which for the fake arrays are host addresses) over MPI.

Strict where the backend's contract lies: streams and events keep a log; a collective must run
on a stream other than the current one, and that stream must have waited for an event
recorded on the current stream (the kernels that produced the data) since its last
collective; any host synchronization (Stream/Event.synchronize, deviceSynchronize) raises."""
from __future__ import annotations

import ctypes
import types

import numpy as np

import fakecupy

LOG: list[tuple] = []
HANG = False
_NP = {0: np.int8, 1: np.uint8, 2: np.int32, 3: np.uint32, 4: np.int64, 5: np.uint64,
       6: np.float16, 7: np.float32, 8: np.float64}


def _host(ptr: int, count: int, code: int) -> np.ndarray:
    dtype = np.dtype(_NP[code]) if code in _NP else np.dtype(np.uint16)    # bf16: 2 bytes
    raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(ptr)
    return np.frombuffer(raw, dtype)


class HostSyncError(AssertionError):
    pass


class Stream:
    _current: "Stream"

    def __init__(self, null: bool = False, non_blocking: bool = False) -> None:
        self.ptr = 0 if null else id(self)
        self.waited: list = []          # events waited for since the last collective

    def wait_event(self, event: "Event") -> None:
        LOG.append(("wait_event", self.ptr, event.stream_ptr))
        self.waited.append(event)

    def synchronize(self) -> None:
        raise HostSyncError("host synchronization in the NCCL path")

    def __enter__(self):
        self._prev = Stream._current
        Stream._current = self
        return self

    def __exit__(self, *exc):
        Stream._current = self._prev
        return False


Stream._current = Stream(null=True)


class Event:
    def __init__(self, *args, **kwargs) -> None:
        self.stream_ptr = None

    def record(self, stream: Stream | None = None) -> None:
        stream = stream or Stream._current
        self.stream_ptr = stream.ptr
        LOG.append(("record", stream.ptr))

    @property
    def done(self) -> bool:
        # HANG: a collective that never completes (a peer that never joins)
        return not (HANG and self.stream_ptr in _STREAMS)

    def synchronize(self) -> None:
        raise HostSyncError("host synchronization in the NCCL path")


def _checked(stream_ptr: int, what: str) -> None:
    stream = _STREAMS.get(stream_ptr)
    assert stream is not None and stream_ptr != Stream._current.ptr, \
        f"{what} on the current stream, not a dedicated one"
    assert any(e.stream_ptr == Stream._current.ptr for e in stream.waited), \
        f"{what}: the communication stream did not wait for the producers' stream"
    stream.waited.clear()
    LOG.append(("nccl", what, stream_ptr))


_STREAMS: dict[int, Stream] = {}


def _new_stream(*args, **kwargs) -> Stream:
    s = Stream(*args, **kwargs)
    _STREAMS[s.ptr] = s
    return s


class NcclCommunicator:
    def __init__(self, ndev: int, uid, rank: int) -> None:
        from mpi4py import MPI
        # a communicator of the whole job, or (a group of one from new_group) of this rank
        self.mpi, self.comm = MPI, (MPI.COMM_SELF if ndev == 1 else MPI.COMM_WORLD).Dup()
        assert self.comm.Get_size() == ndev and self.comm.Get_rank() == rank, \
            "the fake NCCL makes communicators of one rank or of every rank only"
        assert uid == self.comm.bcast(uid, root=0), "ranks got different unique ids"
        self.uid = uid

    def _op(self, code: int):
        M = self.mpi
        return {0: M.SUM, 1: M.PROD, 2: M.MAX, 3: M.MIN}[code]

    def allReduce(self, send, recv, count, dtype, op, stream) -> None:
        _checked(stream, "allReduce")
        self.comm.Allreduce(self.mpi.IN_PLACE if send == recv else _host(send, count, dtype),
                            _host(recv, count, dtype), self._op(op))

    def broadcast(self, send, recv, count, dtype, root, stream) -> None:
        _checked(stream, "broadcast")
        self.comm.Bcast(_host(recv, count, dtype), root=root)

    def allGather(self, send, recv, count, dtype, stream) -> None:
        _checked(stream, "allGather")
        n = self.comm.Get_size()
        self.comm.Allgather(_host(send, count, dtype), _host(recv, count * n, dtype))

    def reduceScatter(self, send, recv, count, dtype, op, stream) -> None:
        _checked(stream, "reduceScatter")
        n = self.comm.Get_size()
        self.comm.Reduce_scatter_block(_host(send, count * n, dtype), _host(recv, count, dtype),
                                       self._op(op))

    def destroy(self) -> None:
        self.comm.Free()

    def abort(self) -> None:
        LOG.append(("abort",))


def _device_sync() -> None:
    raise HostSyncError("host synchronization in the NCCL path")


def module(devices: int = 1) -> types.ModuleType:
    """fakecupy's module with streams, events and a fake NCCL; `devices` GPUs per node."""
    m = fakecupy.module()
    m.zeros = lambda shape, dtype=float: fakecupy.ndarray(np.zeros(shape, dtype))
    m.concatenate = lambda arrays: fakecupy.ndarray(np.concatenate([a._a for a in arrays]))
    uid_count = [0]

    def get_unique_id():
        uid_count[0] += 1
        return tuple(np.random.default_rng(uid_count[0]).integers(0, 255, 128).tolist())

    m.cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: devices,
                                           deviceSynchronize=_device_sync)
    m.cuda.Stream = _new_stream
    m.cuda.Event = Event
    m.cuda.get_current_stream = lambda: Stream._current
    m.cuda.nccl = types.SimpleNamespace(NcclCommunicator=NcclCommunicator,
                                        get_unique_id=get_unique_id)
    return m
