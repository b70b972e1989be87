"""What the backends and the group share: reduce ops, the error type, Work, and the state of
a process group (a leaf of the package: the backends import it, the group imports them)."""
from __future__ import annotations

import datetime
import os
import time
from enum import Enum
from typing import Any, Callable


class ReduceOp(Enum):
    SUM = "sum"
    AVG = "avg"
    PRODUCT = "prod"
    MIN = "min"
    MAX = "max"

    def __repr__(self) -> str:
        return f"ReduceOp.{self.name}"


ReduceOp.PROD = ReduceOp.PRODUCT     # type: ignore[attr-defined]   (both spellings, as torch)


class DistError(RuntimeError):
    """A collective failed: a timeout, a mismatch between ranks, a refused tensor."""


class Work:
    """What an `async_op=True` collective returns: `wait()` blocks until it is done (on the MPI
    backend, with the group's deadline); with NCCL it orders the current CUDA stream after the
    collective without blocking the host, as PyTorch does."""

    def __init__(self, desc: str, wait_fn: Callable[[float | None], None],
                 test_fn: Callable[[], bool] | None = None) -> None:
        self.desc = desc
        self._wait_fn = wait_fn
        self._test_fn = test_fn
        self._done = False
        self._finishers: list[Callable[[], None]] = []
        # time.perf_counter() when the collective was started, and when its transfer was seen
        # complete (the MPI progress thread records when its test succeeded; otherwise when
        # wait() returned): its interval, which bench/distributed.py compares with backward's
        self.started_at = time.perf_counter()
        self.done_at: float | None = None

    def add_finisher(self, fn: Callable[[], None]) -> None:
        """fn runs once after the transfer completes (copy back, divide for AVG, cast back)."""
        self._finishers.append(fn)

    def wait(self, timeout: Any = None) -> bool:
        if not self._done:
            self._wait_fn(_seconds(timeout) if timeout is not None else None)
            self._done = True
            if self.done_at is None:
                self.done_at = time.perf_counter()
            for fn in self._finishers:
                fn()
            self._finishers = []
        return True

    def is_completed(self) -> bool:
        if self._done:
            return True
        return self._test_fn() if self._test_fn is not None else False

    def __repr__(self) -> str:
        return f"<Work {self.desc} {'done' if self._done else 'pending'}>"


def done_work(desc: str) -> Work:
    w = Work(desc, lambda t: None, lambda: True)
    return w


class ProcessGroup:
    """The state of a process group (the default one, or one `new_group` made). `backend`
    carries CPU tensors, `gpu_backend` (NCCL, created when asked for or at the first GPU
    collective) carries GPU tensors. `ranks` are its members' ranks in the default group
    (rank and size are within this group); `gid` numbers it for compiled graphs (0 is the
    default group)."""

    def __init__(self, name: str, comm: Any, rank: int, size: int, local_rank: int,
                 timeout_s: float) -> None:
        self.name = name
        self.comm = comm                # mpi4py's COMM_WORLD duplicate, or None in a world of 1
        self.check_comm: Any = None     # another duplicate, for the signature checks
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.ranks: list[int] = list(range(size))
        self.gid = 0
        self.timeout_s = timeout_s
        self.backend: Any = None        # CPU collectives
        self.gpu_backend: Any = None    # GPU collectives
        self.cuda_aware_mpi = False
        self.seq = 0                    # collectives issued so far (same on every rank)
        self.debug = os.environ.get("TRACEJIT_DIST_DEBUG", "") not in ("", "0")
        # every collective's signature is checked across ranks (sigcheck.py) unless turned off
        self.check = os.environ.get("TRACEJIT_DIST_CHECK", "1") not in ("", "0")
        self.pending_check: Any = None  # posted by dispatch.start, taken by the backend's Work

    def group_rank(self, global_rank: int) -> int:
        """This group's rank of the default group's rank `global_rank` (ValueError if none)."""
        try:
            return self.ranks.index(int(global_rank))
        except ValueError:
            raise ValueError(f"rank {global_rank} is not a member of the process group of "
                             f"ranks {self.ranks}") from None

    def __repr__(self) -> str:
        return f"<ProcessGroup {self.name} ranks={self.ranks} rank={self.rank}>"

    def take_check(self) -> Any:
        check, self.pending_check = self.pending_check, None
        return check


def _seconds(timeout: Any) -> float:
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    t = float(timeout)
    if not t > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    return t


class GroupMember:
    """torch.distributed.GroupMember: WORLD stands for the default group, and `new_group`
    returns NON_GROUP_MEMBER on the ranks it leaves out."""
    WORLD: Any = None
    NON_GROUP_MEMBER: Any = object.__new__(type("NonGroupMember", (), {
        "__repr__": lambda self: "GroupMember.NON_GROUP_MEMBER"}))
