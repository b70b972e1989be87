"""The NCCL backend: `cupy.cuda.nccl` communicators for GPU tensors.

Bootstrap over MPI: rank 0 makes the NCCL unique id and MPI broadcasts it (a world of 1 needs
no MPI). Each rank drives the GPU of its local rank (rank r's r-th GPU on its node); two ranks
of one node on one GPU is an error at start-up, naming both ranks, because NCCL would
deadlock or fail later with an obscure message.

Ordering without host synchronization: every collective records an event on the caller's
current stream (after the kernels that produced its input, the gradients), makes the
dedicated communication stream wait for it, runs on that stream, and records a `done` event.
`Work.wait()` makes the caller's current stream wait for `done`, so later kernels (the
optimizer) run after the collective, and the host never blocks, as in PyTorch.

Mismatched collectives: the signature check of every collective (sigcheck.py) goes over MPI,
and the NCCL kernel is enqueued only once it has passed, so ranks that disagree get its error
naming each rank's collective and no mismatched kernel ever reaches NCCL (which would hang on
the GPU or write garbage). Gating does not block the host: as on MPI, a collective whose check
has not completed waits in a first-in-first-out queue (sigcheck.PostQueue, which keeps the
NCCL calls in program order, as NCCL requires) that later collectives, `progress()` (DDP's
gradient hooks), `Work.wait()` and the watchdog advance. Its input is fixed at the call all
the same: the event the communication stream will wait for is recorded on the caller's
stream then, after the kernels that made the input.

Never a hang: since the host does not wait, a watchdog thread polls the `done` events of the
collectives in flight; one not done within the group's timeout (a peer dead or stuck, or
issuing another collective) prints which operation and rank, aborts the NCCL communicator and
ends the job (MPI_Abort), as PyTorch's NCCL watchdog does.

AVG is SUM followed by a scale on the communication stream (ncclAvg needs NCCL 2.10 and
CuPy does not name it). bool tensors travel as uint8: sum and max are `any`, prod and min
`all`, as PyTorch."""
from __future__ import annotations

import importlib
import os
import socket
import sys
import threading
import time
from typing import Any

import numpy as np

from ..devices import cupy_module
from . import mpi_backend
from .base import DistError, ProcessGroup, ReduceOp, Work
from .sigcheck import PostQueue, Slot

# ncclDataType_t and ncclRedOp_t values (nccl.h), for names older CuPy lacks
_NCCL_DT = {"int8": 0, "uint8": 1, "int32": 2, "uint32": 3, "int64": 4, "uint64": 5,
            "float16": 6, "float32": 7, "float64": 8, "bfloat16": 9}
_NCCL_OP = {ReduceOp.SUM: 0, ReduceOp.AVG: 0, ReduceOp.PRODUCT: 1, ReduceOp.MAX: 2,
            ReduceOp.MIN: 3}
_BOOL_OP = {ReduceOp.SUM: 2, ReduceOp.MAX: 2, ReduceOp.PRODUCT: 3, ReduceOp.MIN: 3}


def _ptr(a: Any) -> int:
    return int(a.__cuda_array_interface__["data"][0])


class NCCLBackend:
    # a one-rank group's collectives change nothing (traced.py then skips them entirely)
    identity_on_one_rank = True

    def __init__(self, pg: ProcessGroup) -> None:
        cp = cupy_module()
        self.cp, self.pg = cp, pg
        try:
            nccl = getattr(cp.cuda, "nccl", None)
            if nccl is None:            # a submodule CuPy imports only on request
                nccl = importlib.import_module("cupy.cuda.nccl")
            nccl.NcclCommunicator       # noqa: B018  (CuPy built without NCCL lacks it)
        except (AttributeError, ImportError):
            raise RuntimeError("the NCCL backend needs CuPy with NCCL: pip install "
                               "'tracejit[cuda]' (cupy and nvidia-nccl)") from None
        self.nccl = nccl
        ndev = cp.cuda.runtime.getDeviceCount()
        self.device = pg.local_rank if pg.local_rank < ndev else pg.local_rank % max(ndev, 1)
        self._check_one_gpu_per_rank(ndev)
        uid = nccl.get_unique_id() if pg.rank == 0 else None
        if pg.size > 1:
            uid = pg.backend.broadcast_object(uid, 0, "NCCL unique id broadcast")
        with cp.cuda.Device(self.device):
            self.comm = nccl.NcclCommunicator(pg.size, uid, pg.rank)
            self.stream = cp.cuda.Stream(non_blocking=True)
        self._inflight: list[tuple[Any, str, float]] = []     # (done event, desc, deadline)
        # collectives waiting for their signature check, in program order
        self.queue = PostQueue()
        self._queued: list[tuple[Slot, float]] = []            # (slot, deadline)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="tracejit-nccl-watchdog",
                                          daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        period = min(1.0, self.pg.timeout_s / 4)
        while not self._closed.wait(period):
            # a collective the host never waits for is still enqueued once its check passes
            self.queue.advance()
            now = time.monotonic()
            with self._lock:
                self._inflight = [w for w in self._inflight if not w[0].done]
                self._queued = [q for q in self._queued if q[0].reqs is None and
                                q[0].error is None]
                late = [w[1] for w in self._inflight if now > w[2]] + \
                    [f"the signature check of {q[0].desc}" for q in self._queued if now > q[1]]
            if late:
                self._abort(late[0])

    def _abort(self, desc: str) -> None:
        pg = self.pg
        sys.stderr.write(
            f"tracejit.distributed (nccl): rank {pg.rank} of {pg.size}: {desc} did not complete "
            f"on the GPU within {pg.timeout_s:g} s: another rank is dead, stuck, or issued a "
            f"different collective; "
            f"aborting the job\n")
        sys.stderr.flush()
        try:
            self.comm.abort()
        except Exception:           # noqa: BLE001  (ending the job matters more)
            pass
        if pg.comm is not None:
            mpi_backend.abort(1)
        os._exit(1)

    def _check_one_gpu_per_rank(self, ndev: int) -> None:
        pg = self.pg
        me = (socket.gethostname(), self.device)
        everyone = [me] if pg.size == 1 else \
            pg.backend.all_gather_object(me, "NCCL device check")
        seen: dict[tuple, int] = {}
        for r, key in enumerate(everyone):
            if key in seen:
                raise DistError(
                    f"tracejit.distributed (nccl): ranks {seen[key]} and {r} would both use "
                    f"GPU {key[1]} of host {key[0]}; NCCL needs one GPU per rank (this node "
                    f"has {ndev}: start at most that many ranks per node)")
            seen[key] = r

    # -- ordering ----------------------------------------------------------------------------
    def _enqueue(self, desc: str, run, keep: list) -> Work:
        cp = self.cp
        with cp.cuda.Device(self.device):
            ready = cp.cuda.Event()             # the input as the caller's stream makes it
            ready.record(cp.cuda.get_current_stream())
        done = cp.cuda.Event()

        def post() -> list:
            """Enqueue the collective (its check passed): returns no MPI requests."""
            with cp.cuda.Device(self.device):
                self.stream.wait_event(ready)
                run(self.stream)
                done.record(self.stream)
            with self._lock:
                self._inflight.append((done, desc, time.monotonic() + self.pg.timeout_s))
            return []

        slot = Slot(post, self.pg.take_check(), desc)
        self.queue.add(slot)
        if slot.reqs is None and slot.error is None:
            with self._lock:
                self._queued.append((slot, time.monotonic() + self.pg.timeout_s))

        def posted() -> bool:
            self.queue.advance()
            if slot.error is not None:
                raise slot.error
            return slot.reqs is not None

        def wait(timeout: float | None) -> None:
            limit = self.pg.timeout_s if timeout is None else timeout
            deadline, nap = time.monotonic() + limit, 20e-6
            while not posted():         # the check over MPI: the host waits for the ranks'
                if time.monotonic() > deadline:          # records, never for the GPU
                    pg = self.pg
                    raise DistError(
                        f"tracejit.distributed (nccl): rank {pg.rank} of {pg.size} timed out "
                        f"after {limit:g} s in the signature check of {desc}: at least one of "
                        f"ranks {[r for r in range(pg.size) if r != pg.rank]} did not join it "
                        f"(dead, stuck, or issuing fewer collectives)")
                time.sleep(nap)
                nap = min(nap * 2, 1e-3)
            cp.cuda.get_current_stream().wait_event(done)
            keep.clear()            # the arrays are safe once the stream is ordered after it

        return Work(desc, wait, lambda: posted() and bool(done.done))

    def _dtype(self, a: Any) -> int:
        name = "uint8" if a.dtype == np.bool_ else a.dtype.name
        if name not in _NCCL_DT:
            raise DistError(f"tracejit.distributed (nccl): dtype {a.dtype} is not supported")
        return _NCCL_DT[name]

    @staticmethod
    def _bytes_view(a: Any) -> Any:
        return a.view(np.uint8) if a.dtype == np.bool_ else a

    # -- collectives (in place on contiguous CuPy arrays) ------------------------------------
    def progress(self) -> None:
        self.queue.advance()

    def all_reduce(self, a: Any, op: ReduceOp, desc: str) -> Work:
        is_bool = a.dtype == np.bool_
        nop = _BOOL_OP[op] if is_bool else _NCCL_OP[op]
        buf = self._bytes_view(a)
        size = self.pg.size

        def run(stream) -> None:
            self.comm.allReduce(_ptr(buf), _ptr(buf), buf.size, self._dtype(a), nop, stream.ptr)
            if op is ReduceOp.AVG:      # floats only (collectives.py refuses AVG otherwise)
                with stream:
                    buf.__imul__(buf.dtype.type(1.0 / size))
        return self._enqueue(desc, run, [buf])

    def broadcast(self, a: Any, src: int, desc: str) -> Work:
        buf = self._bytes_view(a)
        return self._enqueue(desc, lambda s: self.comm.broadcast(
            _ptr(buf), _ptr(buf), buf.size, self._dtype(a), src, s.ptr), [buf])

    def all_gather(self, out: Any, a: Any, desc: str) -> Work:
        src, dst = self._bytes_view(a), self._bytes_view(out)
        return self._enqueue(desc, lambda s: self.comm.allGather(
            _ptr(src), _ptr(dst), src.size, self._dtype(a), s.ptr), [src, dst])

    def reduce_scatter(self, out: Any, a: Any, op: ReduceOp, desc: str) -> Work:
        is_bool = a.dtype == np.bool_
        nop = _BOOL_OP[op] if is_bool else _NCCL_OP[op]
        src, dst = self._bytes_view(a), self._bytes_view(out)
        size = self.pg.size

        def run(stream) -> None:
            self.comm.reduceScatter(_ptr(src), _ptr(dst), dst.size, self._dtype(a), nop,
                                    stream.ptr)
            if op is ReduceOp.AVG:
                with stream:
                    dst.__imul__(dst.dtype.type(1.0 / size))
        return self._enqueue(desc, run, [src, dst])

    def close(self) -> None:
        self._closed.set()
        try:
            self.comm.destroy()
        except Exception:           # already torn down at interpreter exit
            pass
