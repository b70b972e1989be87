"""The MPI backend: nonblocking mpi4py buffer calls on the NumPy arrays behind CPU tensors,
each waited with the group's deadline (so a rank that never joins gives an error, not a hang).

Why nonblocking calls polled from Python rather than a communication thread: on a machine
with one core per rank, a thread blocked in MPI spins on that core and slows the backward
pass it should overlap with. Open MPI progresses nonblocking collectives inside MPI calls, so
`progress()` (a Testall on what is in flight) is called by DDP's gradient hooks while backward
runs, and the all-reduces advance between the backward kernels. Compiled code makes no MPI
calls while a kernel or GEMM runs, so the collectives it starts are advanced by a progress
thread (the pump) that tests them after naps of 20 us doubling to 1 ms (_pump_loop); with
TRACEJIT_MPI_PROGRESS_THREAD=0 (or below TRACEJIT_MPI_PUMP_MIN_BYTES) the compiled code calls
progress() between its steps instead (runtime/backend.py's STEP_HOOKS, runtime/grad_sync.py)
and its waits test in a loop, then between short sleeps: see `wants_progress_thread`.

float16/bfloat16 have no MPI type: they are reduced in a float32 copy and cast back (the
bytes-only collectives, broadcast and all-gather, move them as bytes)."""
from __future__ import annotations

import os
import pickle
import threading
import time
from typing import Any, Callable

import numpy as np

from .base import DistError, ProcessGroup, ReduceOp, Work, done_work
from .sigcheck import PostQueue, Slot

_MPI: Any = None


# Open MPI's nonblocking all-reduce algorithm under a launcher: recursive doubling (mca_defaults)
IALLREDUCE_RDBL = ("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "4")


def mca_defaults(env: Any) -> None:
    """Open MPI settings tracejit picks, read by MPI_Init from the environment (so set before
    mpi4py initializes MPI); a value the user set is kept. A script that imports mpi4py.MPI
    itself before init_process_group has initialized MPI already, too early for this:
    tracejit's launcher (run.py) also sets the all-reduce algorithm in mpiexec's environment.

    A singleton (no launcher) skips the libfabric probe, ~1 s of start-up. Under a launcher
    the nonblocking all-reduce uses recursive doubling: libnbc's default for any in-place call
    (all of ours: DDP's buckets are reduced in place) is a binomial reduce to rank 0 followed
    by a broadcast, 2 log2(p) transfers of the whole buffer one after the other, where
    recursive doubling makes log2(p) exchanges, both ways at once: on 2 ranks, one. Measured
    between 2 ranks on 2 cores (busy machine, spin-waited, medians of 41): 1 MiB of float32
    0.32-0.37 ms against 0.79-1.04 ms, 0.6 MB 0.16 ms against 0.49-0.51 ms. Every rank ends
    with the same values (checked on 2-4 ranks, NaN under MAX included), as DDP needs.
    On many ranks a ring (`OMPI_MCA_coll_libnbc_iallreduce_algorithm=1`) moves less data per
    rank; it is not measured here."""
    launched = any(v in env for v in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"))
    if not launched:
        env.setdefault("OMPI_MCA_btl", "^ofi")
    else:
        env.setdefault(*IALLREDUCE_RDBL)


def _mpi() -> Any:
    global _MPI
    if _MPI is None:
        mca_defaults(os.environ)
        try:
            from mpi4py import MPI
        except ImportError:
            raise RuntimeError("the MPI backend needs mpi4py: pip install 'tracejit[mpi]' "
                               "(mpi4py and Open MPI), or mpi4py built against your "
                               "cluster's MPI") from None
        _MPI = MPI
    return _MPI


def comm_world() -> Any:
    """A duplicate of MPI_COMM_WORLD: our collectives never match the user's own MPI calls."""
    return _mpi().COMM_WORLD.Dup()


def local_rank(comm: Any) -> int:
    for var in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"):
        if var in os.environ:
            return int(os.environ[var])
    node = comm.Split_type(_mpi().COMM_TYPE_SHARED)
    try:
        return node.Get_rank()
    finally:
        node.Free()


def wants_progress_thread() -> bool:
    """Whether collectives started inside compiled code get a progress thread (the pump), or
    the compiled code lets MPI progress between its steps (runtime/backend.py STEP_HOOKS;
    TRACEJIT_MPI_PROGRESS_THREAD=0). With the thread on, those under `pump_min_bytes()` are
    polled all the same. The thread is the default: measured (CPU time per step and rank, all
    threads, 2 ranks x 1 thread on a loaded 2-core machine, interleaved runs) polling cost the
    wide-MLP compiled step (buckets of 1 and 9.5 MB) 37-47 ms against 23-29 ms with the
    thread, a large transfer moved by the waiting main thread; on the nanoGPT-small compiled
    step (1.1 and 0.6 MB) the two were within the machine's noise (polled 22.1-27.9 ms, thread
    22.4-25.3 ms, over 9 rounds each, the sign of the difference changing between rounds)."""
    return os.environ.get("TRACEJIT_MPI_PROGRESS_THREAD", "1").strip() not in ("", "0")


def pump_min_bytes() -> int:
    """The smallest collective the pump advances (TRACEJIT_MPI_PUMP_MIN_BYTES; default 0: all);
    smaller ones are polled between the compiled program's steps."""
    return int(os.environ.get("TRACEJIT_MPI_PUMP_MIN_BYTES", "0"))


# the pump thread's shortest and longest pause between tests of its collectives (_pump_loop):
# it starts at the shortest after news (a collective added, a wait begun, a check passed, a
# collective completed) and doubles at every test without news
PUMP_NAP_MIN_S = 20e-6
PUMP_NAP_MAX_S = 1e-3


# A blocking wait (`_work`) tests its collective in a loop for WAIT_SPIN_S, then between
# sleeps: WAIT_NAP_S while the wait is younger than WAIT_SHORT_S, then doubling up to
# PUMP_NAP_MAX_S. Why time, not a count of tests: a test that moves data costs tens of
# microseconds, so the 2000 tests spun before the first sleep took 2-4 ms of CPU a step
# from a peer on the same cores whenever it was late (a loaded machine, or ranks > cores);
# a sleep of 20 us wakes within ~80 us, a few tenths of a percent of a training step.
WAIT_SPIN_S = 100e-6
WAIT_NAP_S = 20e-6
WAIT_SHORT_S = 5e-3


def wait_nap(waited_s: float) -> float:
    """How long a wait that has lasted waited_s sleeps before its next test."""
    if waited_s < WAIT_SHORT_S:
        return WAIT_NAP_S
    return min(PUMP_NAP_MAX_S, WAIT_NAP_S * 2 ** min(16, (waited_s - WAIT_SHORT_S) / 1e-3))


def abort(code: int) -> None:
    _mpi().COMM_WORLD.Abort(code)


# per mpi4py module (tests run a fake one): built once, where each of a DDP step's bucket
# starts built both tables anew
_TABLES: dict[int, tuple[Any, dict, dict]] = {}


def _tables(MPI: Any) -> tuple[dict, dict]:
    t = _TABLES.get(id(MPI))
    if t is None or t[0] is not MPI:
        ops = {(ReduceOp.SUM, False): MPI.SUM, (ReduceOp.AVG, False): MPI.SUM,
               (ReduceOp.PRODUCT, False): MPI.PROD, (ReduceOp.MAX, False): MPI.MAX,
               (ReduceOp.MIN, False): MPI.MIN,
               # torch's meaning on bool tensors: sum/max = any, prod/min = all
               (ReduceOp.SUM, True): MPI.LOR, (ReduceOp.MAX, True): MPI.LOR,
               (ReduceOp.PRODUCT, True): MPI.LAND, (ReduceOp.MIN, True): MPI.LAND}
        types = {np.dtype(np.float32): MPI.FLOAT, np.dtype(np.float64): MPI.DOUBLE,
                 np.dtype(np.int32): MPI.INT32_T, np.dtype(np.int64): MPI.INT64_T,
                 np.dtype(np.bool_): MPI.C_BOOL, np.dtype(np.uint8): MPI.UINT8_T,
                 np.dtype(np.int8): MPI.INT8_T, np.dtype(np.int16): MPI.INT16_T}
        t = _TABLES[id(MPI)] = (MPI, ops, types)
    return t[1], t[2]


def _mpi_op(MPI: Any, op: ReduceOp, is_bool: bool) -> Any:
    return _tables(MPI)[0][op, is_bool]


def _mpi_type(MPI: Any, a: np.ndarray) -> Any:
    return _tables(MPI)[1][a.dtype]


def _is_half(a: np.ndarray) -> bool:
    d = a.dtype        # (dtype.name is slow: asked only of 2-byte types)
    return d.itemsize == 2 and (d == np.float16 or d.name == "bfloat16")


class MPIBackend:
    # a one-rank group's collectives change nothing (traced.py then skips them entirely)
    identity_on_one_rank = True

    def __init__(self, pg: ProcessGroup) -> None:
        self.pg = pg
        self.MPI = _mpi()
        self.comm = pg.comm
        # collectives not known complete (Slot: sigcheck.py)
        self._inflight: list[Slot] = []
        # data collectives wait there for their signature check, in program order
        self.queue = PostQueue()
        # the pump thread, for collectives started inside compiled code (see _pumped_work);
        # without MPI_THREAD_MULTIPLE they progress when waited for instead
        self.can_pump = self.MPI.Query_thread() >= self.MPI.THREAD_MULTIPLE
        # whether callers should use all_reduce_async (the pump) or progress() themselves
        self.pump = self.can_pump and pg.size > 1 and wants_progress_thread()
        self.pump_min_bytes = pump_min_bytes()
        self._pumped: list[tuple[Slot, threading.Event, list]] = []   # (slot, done, error)
        self._pump: threading.Thread | None = None
        self._pump_cv = threading.Condition()
        self._closing = False
        # threads blocked in a pumped Work.wait, and whether a collective was added or a wait
        # begun since the pump's last look: the pump then tests at once and its naps start
        # again from the shortest
        self._pump_waiters = 0
        self._pump_kick = False

    # -- waiting ---------------------------------------------------------------------------
    def _work(self, desc: str, post: Callable[[], list], pumped: bool = False) -> Work:
        """post() issues the MPI call(s) and returns their requests: at once, or when the
        signature check that start() posted has passed (sigcheck.py)."""
        slot = Slot(post, self.pg.take_check(), desc)
        self.queue.add(slot)
        if pumped:
            return self._pumped_work(desc, slot)
        start = time.monotonic()
        self._inflight.append(slot)

        def test() -> bool:
            return self._test(slot)

        def wait(timeout: float | None) -> None:
            limit = self.pg.timeout_s if timeout is None else timeout
            deadline = start + limit
            began = time.monotonic()
            while not self._test(slot):
                now = time.monotonic()
                if now - began < WAIT_SPIN_S:
                    continue
                if now > deadline:
                    raise DistError(self.timeout_message(desc, limit))
                time.sleep(wait_nap(now - began))   # leave the core to the other ranks
            self._forget(slot)
            # when a poll between compiled steps (or DDP's hooks) saw the transfer complete:
            # bench/distributed.py compares it with backward's end
            work.done_at = slot.done_at
        work = Work(desc, wait, test)
        return work

    def _forget(self, slot: Slot) -> None:
        self._inflight = [x for x in self._inflight if x is not slot]

    def _test(self, slot: Slot) -> bool:
        """Whether the collective is complete: its check's error (ranks disagree) or MPI's own
        (a message truncated, for instance) becomes an error that names the operation."""
        self.queue.advance()
        if slot.error is not None:
            self._forget(slot)
            raise slot.error
        if slot.reqs is None:
            return False
        try:
            done = bool(self.MPI.Request.Testall(slot.reqs))
        except self.MPI.Exception as e:
            self._forget(slot)
            raise DistError(self.mpi_error_message(slot.desc, e)) from None
        if done and slot.done_at is None:
            slot.done_at = time.perf_counter()
        return done

    def mpi_error_message(self, desc: str, e: Exception) -> str:
        return (f"tracejit.distributed: rank {self.pg.rank} of {self.pg.size}: MPI failed in "
                f"{desc}: {e.Get_error_string()}; ranks probably passed different shapes or "
                f"issued different collectives")

    def _pumped_work(self, desc: str, slot: Slot) -> Work:
        """A collective progressed by the pump thread: compiled code makes no MPI calls while
        it runs, and Open MPI advances nonblocking collectives only inside MPI calls. Only
        the pump tests these requests (MPI forbids testing one request from two threads).

        Starting one wakes the pump only when it had nothing in flight: a pump woken at every
        bucket start takes the core (2 ranks x 2 threads on 2 cores) from the compute thread
        that has just posted the bucket, usually before the peer has posted its own."""
        start = time.monotonic()
        done, error = threading.Event(), []
        with self._pump_cv:
            idle = not self._pumped
            self._pumped.append((slot, done, error))
            if self._pump is None:
                self._pump = threading.Thread(target=self._pump_loop, daemon=True,
                                              name="tracejit-mpi-progress")
                self._pump.start()
            if idle:
                self._pump_kick = True
                self._pump_cv.notify()

        def wait(timeout: float | None) -> None:
            limit = self.pg.timeout_s if timeout is None else timeout
            if not done.is_set():
                with self._pump_cv:
                    if not self._pump_waiters:
                        self._pump_kick = True
                    self._pump_waiters += 1
                    self._pump_cv.notify()
                try:
                    finished = done.wait(max(0.0, start + limit - time.monotonic()))
                finally:
                    with self._pump_cv:
                        self._pump_waiters -= 1
                if not finished:
                    raise DistError(self.timeout_message(desc, limit))
            if error:
                if isinstance(error[0], DistError):
                    raise error[0]
                raise DistError(self.mpi_error_message(desc, error[0]))
            work.done_at = getattr(done, "at", None)       # (set by the pump: _pump_loop)
        work = Work(desc, wait, done.is_set)
        return work

    def _pump_loop(self) -> None:
        """Test the pumped collectives until they complete. After news (a collective added, a
        wait begun, a check passed, a collective completed) at once and then after a nap that
        starts at PUMP_NAP_MIN_S and doubles at every test without news, up to PUMP_NAP_MAX_S:
        MPI needs only a few tests per collective once the peers are in it, and every test
        costs CPU (on this project's 2-core VM a sleep alone costs 16-26 us of CPU however
        short, a test with its thread woken and the GIL taken ~50 us), taken from the kernels
        the collectives overlap with or from a peer rank sharing the core.

        Why the nap grows per test and not per millisecond: with 20 us naps for the first
        millisecond of a wait and of each news, and then doubling every millisecond (before
        this), a peer late by a few milliseconds (a loaded machine, or ranks > cores) kept the
        pump testing 40-70 times a step on the nanoGPT-small compiled step (2 buckets), 2-4 ms
        of CPU a step and rank; doubling per test reaches the longest nap after 7 tests and
        halved that count (bench figures: README, issue 16). While nobody waits, the nap is a
        wait on the condition, so a new collective or a waiter wakes the pump early; while a
        thread waits (its core is idle then) it is a sleep."""
        MPI = self.MPI
        nap = PUMP_NAP_MIN_S
        while True:
            with self._pump_cv:
                while not self._pumped and not self._closing:
                    self._pump_cv.wait()
                if self._closing:
                    return
                items = list(self._pumped)
                if self._pump_kick:
                    self._pump_kick, nap = False, PUMP_NAP_MIN_S
            waiting_check = [item for item in items if item[0].reqs is None]
            self.queue.advance()
            # a check that just passed posted its data: the peers are in this collective now,
            # so test again at the shortest nap (MPI needs only a few tests to move it on)
            # rather than after the long nap the wait for the check had grown to
            if any(item[0].reqs is not None for item in waiting_check):
                nap = PUMP_NAP_MIN_S
            finished = []
            for item in items:
                slot = item[0]
                try:
                    if slot.error is not None:
                        raise slot.error
                    if slot.reqs is not None and MPI.Request.Testall(slot.reqs):
                        finished.append(item)
                except (MPI.Exception, DistError) as e:   # the waiter raises it
                    item[2].append(e)
                    finished.append(item)
            if finished:
                with self._pump_cv:
                    for item in finished:
                        self._pumped.remove(item)
                now = time.perf_counter()
                for item in finished:
                    item[1].at = now           # when the transfer was seen complete
                    item[1].set()
                nap = PUMP_NAP_MIN_S
            with self._pump_cv:
                pause = None
                if self._pump_kick or self._closing:
                    pause = PUMP_NAP_MIN_S
                elif self._pump_waiters:
                    pause = nap
                else:       # woken early by a new collective or a waiter (notify)
                    self._pump_cv.wait(nap)
            if pause:
                time.sleep(pause)               # leave the core to the other rank's work
            nap = min(nap * 2, PUMP_NAP_MAX_S)

    def timeout_message(self, desc: str, limit: float) -> str:
        pg = self.pg
        others = [r for r in range(pg.size) if r != pg.rank]
        return (f"tracejit.distributed: rank {pg.rank} of {pg.size} timed out after "
                f"{limit:g} s in {desc}: at least one of ranks {others} did not join it (dead, "
                f"stuck, or issuing a different collective)")

    def progress(self) -> None:
        """Let in-flight collectives advance (Open MPI progresses them inside MPI calls)."""
        for slot in list(self._inflight):
            if self._test(slot):
                self._forget(slot)

    # -- collectives on contiguous arrays, in place ------------------------------------------
    def all_reduce(self, a: np.ndarray, op: ReduceOp, desc: str, pumped: bool = False) -> Work:
        if self.pg.size == 1:       # every op is the identity on one rank (AVG: divide by 1)
            return done_work(desc)
        MPI = self.MPI
        buf = a.astype(np.float32) if _is_half(a) else a
        mop = _mpi_op(MPI, op, buf.dtype == np.bool_)
        w = self._work(desc, lambda: [self.comm.Iallreduce(
            MPI.IN_PLACE, [buf, _mpi_type(MPI, buf)], mop)], pumped and self.can_pump)
        if op is ReduceOp.AVG:
            w.add_finisher(lambda: buf.__itruediv__(self.pg.size))
        if buf is not a:
            w.add_finisher(lambda: a.__setitem__(Ellipsis, buf.astype(a.dtype)))
        return w

    def broadcast(self, a: np.ndarray, src: int, desc: str) -> Work:
        MPI = self.MPI
        return self._work(desc, lambda: [self.comm.Ibcast(
            [a.reshape(-1).view(np.uint8), MPI.BYTE], root=src)])

    def all_gather(self, out: np.ndarray, a: np.ndarray, desc: str) -> Work:
        MPI = self.MPI
        return self._work(desc, lambda: [self.comm.Iallgather(
            [a.reshape(-1).view(np.uint8), MPI.BYTE],
            [out.reshape(-1).view(np.uint8), MPI.BYTE])])

    def reduce_scatter(self, out: np.ndarray, a: np.ndarray, op: ReduceOp, desc: str) -> Work:
        MPI = self.MPI
        half = _is_half(a)
        src = a.astype(np.float32) if half else a
        dst = out.astype(np.float32) if half else out
        mop = _mpi_op(MPI, op, src.dtype == np.bool_)
        w = self._work(desc, lambda: [self.comm.Ireduce_scatter_block(
            [src, _mpi_type(MPI, src)], [dst, _mpi_type(MPI, dst)], mop)])
        if op is ReduceOp.AVG:
            w.add_finisher(lambda: dst.__itruediv__(self.pg.size))
        if half:
            w.add_finisher(lambda: out.__setitem__(Ellipsis, dst.astype(out.dtype)))
        return w

    def barrier(self, desc: str) -> Work:
        return self._work(desc, lambda: [self.comm.Ibarrier()])

    # -- small Python objects (off the hot path) ---------------------------------------------
    def broadcast_object(self, obj: Any, src: int, desc: str) -> Any:
        data = pickle.dumps(obj) if self.pg.rank == src else b""
        n = np.array([len(data)], np.int64)
        self.broadcast(n, src, desc).wait()
        buf = np.frombuffer(data, np.uint8).copy() if self.pg.rank == src \
            else np.empty(int(n[0]), np.uint8)
        self.broadcast(buf, src, desc).wait()
        return obj if self.pg.rank == src else pickle.loads(buf.tobytes())

    def all_gather_object(self, obj: Any, desc: str) -> list:
        MPI = self.MPI
        data = np.frombuffer(pickle.dumps(obj), np.uint8)
        sizes = np.empty(self.pg.size, np.int64)
        self.all_gather(sizes, np.array([data.size], np.int64), desc).wait()
        out = np.empty(int(sizes.sum()), np.uint8)
        offs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self._work(desc, lambda: [self.comm.Iallgatherv(
            [data, MPI.BYTE], [out, (sizes, offs), MPI.BYTE])]).wait()
        return [pickle.loads(out[o:o + s].tobytes()) for o, s in zip(offs, sizes)]

    def all_reduce_async(self, a: np.ndarray, op: ReduceOp, desc: str) -> Work:
        """all_reduce progressed in the background (for compiled code: traced.py)."""
        return self.all_reduce(a, op, desc, pumped=True)

    def close(self) -> None:
        with self._pump_cv:
            self._closing = True
            self._pump_cv.notify()
        try:
            self.progress()
            self.comm.Free()
            if self.pg.check_comm is not None:
                self.pg.check_comm.Free()
        except DistError:       # a failed collective was reported to whoever waited for it
            pass
        except Exception:       # noqa: BLE001  (already finalized at interpreter exit)
            pass
