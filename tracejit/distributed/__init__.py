"""`tracejit.distributed` (also `tj.distributed`): data-parallel training across processes, in
PyTorch's names, on MPI (mpi4py; CPU tensors, and the launcher and bootstrap everywhere) and
NCCL (through CuPy; GPU tensors). Start a job with
`python -m tracejit.distributed.run --nproc N script.py` or `mpiexec -n N python -m mpi4py
script.py`; a plain `python script.py` is a world of 1."""
from .base import DistError, GroupMember, ProcessGroup, ReduceOp, Work
from .group import (destroy_process_group, get_backend, get_global_rank, get_group_rank,
                    get_local_rank, get_process_group_ranks, get_rank, get_world_size,
                    init_process_group, is_available, is_initialized, is_mpi_available)
from .subgroups import new_group
from .collectives import (all_gather, all_gather_into_tensor, all_gather_object, all_reduce,
                          barrier, broadcast, broadcast_object_list, reduce_scatter,
                          reduce_scatter_tensor)

__all__ = ["DistError", "GroupMember", "ProcessGroup", "ReduceOp", "Work", "all_gather",
           "all_gather_into_tensor", "all_gather_object", "all_reduce", "barrier", "broadcast",
           "broadcast_object_list", "destroy_process_group", "get_backend", "get_global_rank",
           "get_group_rank", "get_local_rank", "get_process_group_ranks", "get_rank",
           "get_world_size", "init_process_group", "is_available", "is_initialized",
           "is_mpi_available", "new_group", "reduce_scatter", "reduce_scatter_tensor"]
