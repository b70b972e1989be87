"""Run under mpiexec by test_distributed_failures.py: one failure mode per launch (argv[1]).
Each must end the whole job with a non-zero exit and a clear message, never hang."""
import os
import sys
import time

import numpy as np

MODE = sys.argv[1]
if MODE == "symmetric":
    import fakenccl
    sys.modules["cupy"] = fakenccl.module(devices=1)

import tracejit as tj  # noqa: E402
import tracejit.distributed as dist  # noqa: E402
from tracejit.nn.parallel import DistributedDataParallel as DDP  # noqa: E402


class Net(tj.nn.Module):
    def __init__(self):
        super().__init__()
        self.used = tj.nn.Linear(3, 1)
        self.unused = tj.nn.Linear(3, 1)

    def forward(self, x):
        return self.used(x)


def symmetric_failures():
    """Failures that every rank detects at the same point: each rank gets the error (caught
    here, to check the next one in the same launch); the last one is left uncaught, so the
    job must still end with a non-zero exit. Run with TRACEJIT_DIST_DEBUG=1."""
    def expect(fn, *words):
        try:
            fn()
        except Exception as e:          # noqa: BLE001
            msg = str(e)
            assert all(w in msg for w in words), msg
            print(f"ok {fn.__name__}: {msg}", flush=True)
            return e
        raise AssertionError(f"{fn.__name__}: no error")

    def two_ranks_one_gpu():
        dist.init_process_group("nccl", timeout=20)
    expect(two_ranks_one_gpu, "ranks 0 and 1 would both use GPU 0")
    assert not dist.is_initialized()
    dist.init_process_group("mpi", timeout=30)
    rank = dist.get_rank()
    x = tj.tensor(np.ones(4, np.float32))

    def gpu_on_mpi():
        dist.all_reduce(tj.tensor(np.ones(3, np.float32), device="cuda"))
    expect(gpu_on_mpi, "GPU tensor on the MPI backend", "not CUDA-aware", "nccl")

    def different_order():
        if rank == 0:
            dist.all_reduce(x)
        else:
            dist.broadcast(x, src=0)
    expect(different_order, "ranks issued different collectives", "rank 0: all_reduce",
           "rank 1: broadcast")

    def different_shapes():
        dist.all_reduce(tj.tensor(np.ones(4 + rank, np.float32)))
    expect(different_shapes, "rank 0: all_reduce (f32[4]", "rank 1: all_reduce (f32[5]")

    def different_params():
        width = 5 if rank == 1 else 4
        DDP(tj.nn.Sequential(tj.nn.Linear(3, width), tj.nn.Linear(width, 1)))
    expect(different_params, "ranks hold different models", "rank 0 has 0.weight: f32[4, 3]",
           "rank 1 has 0.weight: f32[5, 3]")

    def unused_params():
        ddp = DDP(Net())
        ddp(tj.ones(2, 3)).sum().backward()
    err = expect(unused_params, f"rank {rank} of 2", "unused.weight",
                 "find_unused_parameters=True")
    dist.barrier()                  # every rank has printed before the first abort
    raise err


if MODE == "symmetric":
    symmetric_failures()
dist.init_process_group("mpi", timeout=3 if MODE.startswith("never_joins") else 30)
RANK = dist.get_rank()
x = tj.tensor(np.ones(4, np.float32))

if MODE == "raises":
    if RANK == 1:
        raise ValueError("boom on rank 1")
    dist.all_reduce(x)
elif MODE == "dies":
    if RANK == 1:
        os._exit(3)                 # a crash: no exception, no MPI_Finalize
    dist.all_reduce(x)
    dist.all_reduce(x)
elif MODE == "never_joins":
    if RANK == 1:
        time.sleep(600)             # stuck: rank 0's deadline must end the job
    dist.all_reduce(x)
elif MODE == "different_sizes":   # without TRACEJIT_DIST_DEBUG: the signature check
    dist.all_reduce(tj.tensor(np.ones(4 + 1000 * RANK, np.float32)))
elif MODE == "never_joins_compiled":
    # a DDP step compiled whole: rank 0 waits inside the compiled program (the all-reduce
    # started mid-backward and progressed by MPI's progress thread)
    model = DDP(tj.nn.Linear(4, 1))
    opt = tj.optim.SGD(model.parameters(), lr=0.1)

    @tj.compile
    def step(x):
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    step(tj.ones(2, 4))
    if RANK == 1:
        time.sleep(600)
    step(tj.ones(2, 4))
else:
    raise SystemExit(f"unknown mode {MODE}")
print("unreachable: no error", flush=True)
