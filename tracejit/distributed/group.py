"""The default process group: which backend carries the collectives, this process's rank, the
world size, the timeout, and the abort-on-exception behaviour.

Rank and world size come from MPI. A process started by an MPI launcher (mpiexec, srun) is
recognised by the launcher's environment and joins MPI_COMM_WORLD; a plain `python` run is a
world of 1 that needs no MPI at all (its collectives are the identity).

Why abort on exception: under MPI, a rank that raises and exits leaves the others blocked in
their next collective forever. `init_process_group` installs an excepthook that prints the
error with the rank and calls MPI_Abort, which ends every rank of the job (what
`python -m mpi4py` does)."""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from . import mpi_backend
import warnings

from .base import GroupMember, ProcessGroup, _seconds
from .local_backend import LocalBackend
from .nccl_backend import NCCLBackend

DEFAULT_TIMEOUT_S = 1800.0      # PyTorch's default for CPU process groups (30 minutes)
_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


_GROUP: ProcessGroup | None = None
# every group alive, by gid (the default group is 0): compiled graphs name groups by gid
GROUPS: dict[int, ProcessGroup] = {}
_prev_hook: Any = None


def launched_by_mpi() -> bool:
    return any(v in os.environ for v in _LAUNCHER_VARS)


def current() -> ProcessGroup:
    if _GROUP is None:
        raise RuntimeError("Default process group has not been initialized, please make sure "
                           "to call tracejit.distributed.init_process_group()")
    return _GROUP


def resolve(group: Any, op: str) -> ProcessGroup | None:
    """The group a collective runs on: the default one for None (or GroupMember.WORLD),
    None on a rank that is not a member (the collective is then skipped with a warning, as
    PyTorch does)."""
    pg = current()
    if group is None or group is GroupMember.WORLD or group is pg:
        return pg
    if group is GroupMember.NON_GROUP_MEMBER:
        warnings.warn(f"tracejit.distributed.{op}: this rank (rank {pg.rank}) is not a member "
                      f"of the group: the collective does nothing here", stacklevel=3)
        return None
    if not isinstance(group, ProcessGroup):
        raise TypeError(f"tracejit.distributed.{op}: group must be a process group from "
                        f"new_group() (or None for the default group), got "
                        f"{type(group).__name__}")
    if GROUPS.get(group.gid) is not group:
        raise RuntimeError(f"tracejit.distributed.{op}: the process group of ranks "
                           f"{group.ranks} was destroyed")
    return group


def is_initialized() -> bool:
    return _GROUP is not None


def is_available() -> bool:
    return True


def is_mpi_available() -> bool:
    return importlib.util.find_spec("mpi4py") is not None


def init_process_group(backend: str | None = None, init_method: str | None = None,
                       timeout: Any = None, world_size: int = -1, rank: int = -1,
                       cuda_aware_mpi: bool | None = None, **kwargs: Any) -> None:
    """Join the job's process group. backend: None (MPI for CPU tensors, NCCL for GPU tensors
    when a GPU is there), "mpi", or "nccl". Under an MPI launcher rank and size come from
    MPI_COMM_WORLD (a world_size/rank given must agree); a plain run is a world of 1.
    `cuda_aware_mpi=True` (or TRACEJIT_CUDA_AWARE_MPI=1) lets the MPI backend take GPU tensors."""
    global _GROUP
    if _GROUP is not None:
        raise RuntimeError("trying to initialize the default process group twice!")
    if kwargs.pop("store", None) is not None or init_method not in (None, "env://", "mpi://"):
        raise ValueError("tracejit.distributed bootstraps through MPI: init_method and store "
                         "are not supported (start the job with mpiexec or "
                         "python -m tracejit.distributed.run)")
    if kwargs:
        raise TypeError(f"init_process_group() got unexpected arguments {sorted(kwargs)}")
    if backend is not None:
        backend = str(backend).lower()
        if backend not in ("mpi", "nccl", "cpu:mpi,cuda:nccl"):
            raise ValueError(f"unknown backend {backend!r}: expected None, 'mpi' or 'nccl' "
                             f"(gloo is not available; MPI carries CPU tensors)")
    timeout_s = _seconds(timeout) if timeout is not None else float(
        os.environ.get("TRACEJIT_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    if launched_by_mpi() or backend == "mpi":
        comm = mpi_backend.comm_world()
        r, n, local = comm.Get_rank(), comm.Get_size(), mpi_backend.local_rank(comm)
    else:
        comm, r, n, local = None, 0, 1, 0
    if world_size not in (-1, n) or rank not in (-1, r):
        raise ValueError(f"init_process_group(world_size={world_size}, rank={rank}) disagrees "
                         f"with MPI, which says rank {r} of {n}")
    # None: MPI carries CPU tensors and NCCL (made at the first GPU collective) GPU tensors
    pg = ProcessGroup(backend or "cpu:mpi,cuda:nccl", comm, r, n, local, timeout_s)
    env_aware = os.environ.get("TRACEJIT_CUDA_AWARE_MPI", "") not in ("", "0")
    pg.cuda_aware_mpi = env_aware if cuda_aware_mpi is None else bool(cuda_aware_mpi)
    GROUPS[0] = pg
    GroupMember.WORLD = pg
    if comm is not None:
        pg.check_comm = comm.Dup()
        pg.backend = mpi_backend.MPIBackend(pg)
        _install_abort(pg)
    else:
        pg.backend = LocalBackend(pg)
    _GROUP = pg
    if backend == "nccl":
        try:
            ensure_gpu_backend(pg)
        except BaseException:
            destroy_process_group()
            raise


def ensure_gpu_backend(pg: ProcessGroup) -> Any:
    """The NCCL backend, created on first use (a collective call: every rank gets here in the
    same order, because it is reached from the same collective on every rank)."""
    if pg.gpu_backend is None:
        pg.gpu_backend = NCCLBackend(pg)
    return pg.gpu_backend


def destroy_process_group(group: Any = None) -> None:
    """Destroy `group`, or with no argument every group and the default one."""
    global _GROUP
    if group is not None and group is not _GROUP and group is not GroupMember.WORLD:
        if isinstance(group, ProcessGroup) and GROUPS.get(group.gid) is group:
            del GROUPS[group.gid]
            _close(group)
        return
    pg = _GROUP
    if pg is None:
        return
    _GROUP = None
    GroupMember.WORLD = None
    for sub in sorted(GROUPS, reverse=True):
        _close(GROUPS.pop(sub))
    _uninstall_abort()


def _close(pg: ProcessGroup) -> None:
    for b in (pg.gpu_backend, pg.backend):
        if b is not None:
            b.close()


def get_rank(group: Any = None) -> int:
    """This process's rank in `group` (the default group if None); -1 if not a member."""
    if group is GroupMember.NON_GROUP_MEMBER:
        return -1
    return current().rank if group is None else group.rank


def get_world_size(group: Any = None) -> int:
    if group is GroupMember.NON_GROUP_MEMBER:
        return -1
    return current().size if group is None else group.size


def get_process_group_ranks(group: Any) -> list[int]:
    """The default group's ranks of `group`'s members, in group-rank order."""
    return list(current().ranks if group is None else group.ranks)


def get_global_rank(group: Any, group_rank: int) -> int:
    ranks = get_process_group_ranks(group)
    if not 0 <= int(group_rank) < len(ranks):
        raise ValueError(f"group rank {group_rank} is not in a group of {len(ranks)} ranks")
    return ranks[int(group_rank)]


def get_group_rank(group: Any, global_rank: int) -> int:
    return (current() if group is None else group).group_rank(global_rank)


def get_local_rank() -> int:
    return current().local_rank


def get_backend(group: Any = None) -> str:
    return current().name


def _install_abort(pg: ProcessGroup) -> None:
    """An uncaught exception in this rank's main thread ends the whole job (see the module
    doc), as `python -m mpi4py` does; other threads' exceptions are left alone, as Python
    leaves them (tracejit's own threads end the job themselves when they must)."""
    global _prev_hook
    if _prev_hook is not None:
        return
    _prev_hook = sys.excepthook
    rank, size = pg.rank, pg.size

    def abort(kind, value, tb, prev=sys.excepthook):
        try:
            prev(kind, value, tb)
            sys.stderr.write(f"tracejit.distributed: rank {rank} of {size} raised "
                             f"{kind.__name__}; aborting all {size} ranks of the job\n")
            sys.stderr.flush()
        finally:
            mpi_backend.abort(1)

    sys.excepthook = abort


def _uninstall_abort() -> None:
    global _prev_hook
    if _prev_hook is not None:
        sys.excepthook = _prev_hook
        _prev_hook = None
