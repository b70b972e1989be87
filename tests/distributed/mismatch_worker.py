"""Run under mpiexec (without TRACEJIT_DIST_DEBUG) by test_distributed_mismatch.py: ranks that
pass different sizes, dtypes or ops to a collective, or issue different collectives, each get
an error naming every rank's collective. Each case runs in a fresh process group (the failed
collective's data may be left in flight on the old one); "ok <case>: <message>" per rank."""
import sys

import numpy as np
from mpi4py import MPI

import tracejit as tj
import tracejit.distributed as dist
from tracejit.distributed import DistError, ReduceOp


def sizes_silent(rank):
    # f32[4] against f32[2]: MPI reports nothing for this pair (it would be garbage)
    dist.all_reduce(tj.tensor(np.ones(4 - 2 * rank, np.float32)))


def sizes_truncated(rank):
    dist.all_reduce(tj.tensor(np.ones(4 + 1000 * rank, np.float32)))


def dtypes(rank):
    dist.all_reduce(tj.tensor(np.ones(4, np.float32 if rank == 0 else np.int32)))


def ops(rank):
    dist.all_reduce(tj.tensor(np.ones(4, np.float32)),
                    op=ReduceOp.SUM if rank == 0 else ReduceOp.MAX)


def order(rank):
    x = tj.tensor(np.ones(4, np.float32))
    if rank == 0:
        dist.all_reduce(x)
    else:
        dist.broadcast(x, src=0)


def async_wait(rank):
    w = dist.all_reduce(tj.tensor(np.ones(3 + rank, np.float64)), async_op=True)
    w.wait()


def compiled(rank):
    @tj.compile
    def f(x):
        y = x * 2
        dist.all_reduce(y)
        return y
    f(tj.tensor(np.ones(3 + rank, np.float32)))


def gather(rank):
    out = tj.tensor(np.zeros(2 * (2 + rank), np.float32))
    dist.all_gather_into_tensor(out, tj.tensor(np.ones(2 + rank, np.float32)))


CASES = {f.__name__: f for f in (sizes_silent, sizes_truncated, dtypes, ops, order, async_wait,
                                 compiled, gather)}

for name in sys.argv[1:]:
    dist.init_process_group("mpi", timeout=30)
    rank = dist.get_rank()
    try:
        CASES[name](rank)
    except DistError as e:
        print(f"ok {name}: {e}", flush=True)
    else:
        print(f"{name}: no error on rank {rank}", flush=True)
    dist.destroy_process_group()
    MPI.COMM_WORLD.Barrier()        # another communicator: independent of the failed one
