"""Every collective's signature checked across ranks, always, at the cost of one small
nonblocking exchange.

Why: ranks that pass different sizes, dtypes or ops to a collective, or issue collectives in
different orders, get silent garbage, a hang, or (sometimes) an MPI truncation error that does
not say which collective. Caching the check ("check a signature only the first time a call
site sees it") cannot work alone: whether a signature is new is a local fact, and a rank that
skips the check while another runs it issues a different sequence of MPI calls, the very
mismatch being guarded against. So every collective first posts an `Iallgather` of a fixed
128-byte record per rank (its sequence number, a hash of the signature, and the signature's
text) on a communicator of its own, and its data collective is posted only once the records
agree. A difference is a `DistError` on every rank (each sees all records) that names each
rank's collective, and the mismatched data collective is never posted: Open MPI crashes
(SIGSEGV in its nonblocking-collective engine) on some mismatched pairs, and returns garbage
on others. The record of a signature is built once and cached.

Nothing blocks: the data waits in a first-in-first-out queue (PostQueue) that whoever tests
or waits for a collective advances (DDP's gradient hooks, Work.wait, the MPI pump thread of
compiled code), so a bucket's all-reduce started in backward does not stall its rank until
the slowest one gets there; it only starts one small exchange later. The queue keeps the
data collectives in program order, as MPI requires of every rank.
TRACEJIT_DIST_DEBUG=1 waits for each check where the collective is called (the error then
comes from the call itself); TRACEJIT_DIST_CHECK=0 turns the check off (bench/distributed.py
measures what it costs)."""
from __future__ import annotations

import collections
import threading
import time
import zlib
from typing import Any

import numpy as np

from .base import DistError, ProcessGroup

RECORD_BYTES = 128
_HEAD = 16                       # int64 sequence number, int64 signature hash
_RECORDS: dict[str, np.ndarray] = {}


def _record(signature: str) -> np.ndarray:
    rec = _RECORDS.get(signature)
    if rec is None:
        rec = np.zeros(RECORD_BYTES, np.uint8)
        rec[8:16] = np.array([zlib.crc32(signature.encode())], np.int64).view(np.uint8)
        text = signature.encode()[:RECORD_BYTES - _HEAD]
        rec[_HEAD:_HEAD + len(text)] = np.frombuffer(text, np.uint8)
        if len(_RECORDS) < 4096:
            _RECORDS[signature] = rec
    return rec


class SigCheck:
    """The posted exchange of one collective's signature records (see the module doc)."""

    __slots__ = ("pg", "full", "mine", "all", "req", "ok")

    def __init__(self, pg: ProcessGroup, full: str, signature: str) -> None:
        from mpi4py import MPI           # only reached with an MPI communicator (size > 1)
        self.pg, self.full = pg, full
        self.mine = _record(signature).copy()
        self.mine[:8] = np.array([pg.seq], np.int64).view(np.uint8)
        self.all = np.empty((pg.size, RECORD_BYTES), np.uint8)
        self.req = pg.check_comm.Iallgather([self.mine, MPI.BYTE], [self.all, MPI.BYTE])
        self.ok = False

    def test(self) -> bool:
        """True once every rank's record arrived and they agree; DistError if they differ."""
        if self.ok:
            return True
        if not self.req.Test():
            return False
        heads = self.all[:, :_HEAD]
        if not (heads == heads[0]).all():
            raise DistError(self.message(heads.copy().view(np.int64)))   # (size, 2): seq, hash
        self.ok = True
        return True

    def wait(self, limit: float) -> None:
        """Block until test() is True, with the group's deadline."""
        deadline = time.monotonic() + limit
        nap = 20e-6
        while not self.test():
            if time.monotonic() > deadline:
                pg = self.pg
                raise DistError(f"tracejit.distributed: rank {pg.rank} of {pg.size} timed out "
                                f"after {limit:g} s in {self.full}: at least one of ranks "
                                f"{[r for r in range(pg.size) if r != pg.rank]} did not join "
                                f"it (dead, stuck, or issuing fewer collectives)")
            time.sleep(nap)
            nap = min(nap * 2, 1e-3)

    def message(self, heads: np.ndarray) -> str:
        texts = [bytes(self.all[r, _HEAD:]).rstrip(b"\0").decode(errors="replace")
                 for r in range(self.pg.size)]
        same_seq = bool((heads[:, 0] == heads[0, 0]).all())
        lines = "; ".join(f"rank {r}: {'' if same_seq else f'#{int(heads[r, 0])} '}{t}"
                          for r, t in enumerate(texts))
        where = f"collective #{int(heads[0, 0])}" if same_seq else \
            "collectives with different sequence numbers (a rank issued more collectives)"
        return (f"tracejit.distributed: rank {self.pg.rank} of {self.pg.size}: ranks issued "
                f"different collectives at {where}: {lines}")


def post(pg: ProcessGroup, full: str, signature: str) -> Any:
    """The check of the collective `start` is numbering, or None where none is needed."""
    if pg.size == 1 or pg.comm is None or not pg.check:
        return None
    check = SigCheck(pg, full, signature)
    if pg.debug:                     # verified before the data collective is even posted
        check.wait(pg.timeout_s)
        return None
    return check


class Slot:
    """One data collective waiting for its check: `post()` issues its MPI call(s) and returns
    the requests, which land in `reqs`; `error` is the check's failure; `done_at`: the
    time.perf_counter() of the test that first saw the requests complete."""

    __slots__ = ("post", "check", "desc", "reqs", "error", "done_at")

    def __init__(self, post: Any, check: Any, desc: str) -> None:
        self.post, self.check, self.desc = post, check, desc
        self.reqs: list | None = None
        self.error: DistError | None = None
        self.done_at: float | None = None


class PostQueue:
    """Data collectives posted in program order, each once its signature check passed."""

    def __init__(self) -> None:
        self._queue: collections.deque = collections.deque()
        self._lock = threading.Lock()           # the main thread and the MPI pump advance it
        self._failed: DistError | None = None

    def add(self, slot: Slot) -> None:
        with self._lock:
            if self._failed is not None:
                raise DistError(f"{slot.desc} was not started: an earlier collective of this "
                                f"group failed ({self._failed})")
            self._queue.append(slot)
            self._advance()

    def advance(self) -> None:
        if self._queue:
            with self._lock:
                self._advance()

    def _advance(self) -> None:
        q = self._queue
        while q:
            slot = q[0]
            try:
                if slot.check is not None and not slot.check.test():
                    return
            except DistError as e:      # every slot behind it fails too: none can be matched
                self._failed = e
                for s in q:
                    s.error = e if s is slot else DistError(
                        f"{s.desc} was not started: an earlier collective failed ({e})")
                q.clear()
                return
            q.popleft()
            try:
                slot.reqs = slot.post()
            except Exception as e:      # noqa: BLE001  (MPI refused the call: its waiter says)
                slot.error = DistError(f"tracejit.distributed: MPI refused {slot.desc}: {e}")
