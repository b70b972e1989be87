"""Process groups beyond the default one: `new_group(ranks)`, as torch.distributed spells it,
made by splitting the default group's MPI communicator.

As in PyTorch, every rank of the default group calls `new_group` with the same ranks, in the
same order as its other collectives; the members get a group (ranks numbered 0.. within it,
in the order of their default-group ranks), the others GroupMember.NON_GROUP_MEMBER. Ranks
that pass different lists get an error naming each rank's list (the signature check of the
collective that precedes the split), never a hang in MPI_Comm_split."""
from __future__ import annotations

import itertools
from typing import Any

from . import mpi_backend
from .base import GroupMember, ProcessGroup, _seconds
from .dispatch import start
from .group import GROUPS, current
from .local_backend import LocalBackend

_IDS = itertools.count(1)


def new_group(ranks: Any = None, timeout: Any = None, backend: str | None = None,
              pg_options: Any = None, use_local_synchronization: bool = False,
              group_desc: str | None = None) -> Any:
    world = current()
    members = list(range(world.size)) if ranks is None else sorted({int(r) for r in ranks})
    bad = [r for r in members if not 0 <= r < world.size]
    if not members or bad:
        raise ValueError(f"tracejit.distributed.new_group: ranks {sorted(ranks)} must be a "
                         f"non-empty list of ranks of the default group (0..{world.size - 1})")
    if use_local_synchronization:
        raise NotImplementedError("tracejit.distributed.new_group: use_local_synchronization="
                                  "True is not supported (every rank calls new_group)")
    if backend is not None and str(backend).lower() not in ("mpi", "nccl", world.name):
        raise ValueError(f"tracejit.distributed.new_group: unknown backend {backend!r}")
    timeout_s = _seconds(timeout) if timeout is not None else world.timeout_s
    mine = world.rank in members
    if world.comm is None:                           # a world of 1: the group is this process
        comm = None
    else:
        # every rank states the list (the barrier carries the signature check), so ranks
        # that disagree, or one that never calls new_group, give an error, not a hang
        desc = start(world, "new_group", f"(ranks={members})")
        world.backend.barrier(desc).wait()
        MPI = mpi_backend._mpi()
        comm = world.comm.Split(0 if mine else MPI.UNDEFINED, world.rank)
    if not mine:
        return GroupMember.NON_GROUP_MEMBER
    name = world.name if backend is None else str(backend).lower()
    pg = ProcessGroup(name, comm, members.index(world.rank), len(members), world.local_rank,
                      timeout_s)
    pg.ranks, pg.gid = members, next(_IDS)
    pg.cuda_aware_mpi = world.cuda_aware_mpi
    if comm is not None:
        pg.check_comm = comm.Dup()
        pg.backend = mpi_backend.MPIBackend(pg)
    else:
        pg.backend = LocalBackend(pg)
    GROUPS[pg.gid] = pg
    return pg

