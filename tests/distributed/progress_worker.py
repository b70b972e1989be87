"""Run under mpiexec (2 ranks) by test_distributed_progress.py, with
argv[1] 0, 1 or small (TRACEJIT_MPI_PROGRESS_THREAD=0, 1, or 1 with the buckets under
TRACEJIT_MPI_PUMP_MIN_BYTES): how all-reduces started inside compiled code advance. With
the progress thread (the default) no step polls and the MPI backend's pump thread advances
them; without it, a compiled training step's program lets MPI progress after
each of its steps (runtime/backend.py STEP_HOOKS) while its buckets are in flight, and so does
a compiled model's backward (runtime/grad_sync.py). Both average exactly as the
single-process full-batch reference."""
import sys
import threading

import numpy as np

import tracejit as tj
import tracejit.distributed as dist
from tracejit.distributed.group import current
from tracejit.nn.parallel import DistributedDataParallel as DDP
from tracejit.runtime.backend import STEP_HOOKS

dist.init_process_group(timeout=60)
RANK, WORLD = dist.get_rank(), dist.get_world_size()
THREAD = sys.argv[1] == "1"       # "small": the thread is on, but these buckets are polled
BE = current().backend
assert BE.pump == (sys.argv[1] != "0"), (BE.pump, sys.argv[1])
CALLS = []
_progress = BE.progress
BE.progress = lambda: (CALLS.append(1), _progress())[1]


def net():
    tj.manual_seed(5)
    return tj.nn.Sequential(tj.nn.Linear(6, 48, dtype=tj.float64), tj.nn.Tanh(),
                            tj.nn.Linear(48, 48, dtype=tj.float64), tj.nn.Tanh(),
                            tj.nn.Linear(48, 1, dtype=tj.float64))


def data(step):
    rng = np.random.default_rng(step)
    x, y = rng.standard_normal((4 * WORLD, 6)), rng.standard_normal((4 * WORLD, 1))
    n = x.shape[0] // WORLD
    return (x, y), (x[RANK * n:(RANK + 1) * n], y[RANK * n:(RANK + 1) * n])


def loss_fn(m, x, y):
    return ((m(x) - y) ** 2).mean()


def tensors(pair):
    return [tj.tensor(a) for a in pair]


def reference(steps):
    m = net()
    opt = tj.optim.SGD(m.parameters(), lr=0.1)
    for s in range(steps):
        opt.zero_grad()
        loss_fn(m, *tensors(data(s)[0])).backward()
        opt.step()
    return m


def same(m, ref, what):
    for (n, p), q in zip(m.named_parameters(), ref.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=f"{what}: {n}")


def pump_running():
    return any(t.name == "tracejit-mpi-progress" for t in threading.enumerate())


def check_compiled_step():
    m = net()
    ddp = DDP(m, bucket_cap_mb=1 / 2048)         # 512 bytes: three buckets
    assert len(ddp.reducer.buckets) == 3
    opt = tj.optim.SGD(ddp.parameters(), lr=0.1)

    @tj.compile
    def step(x, y):
        opt.zero_grad()
        loss_fn(ddp, x, y).backward()
        opt.step()

    for s in range(3):
        CALLS.clear()
        step(*tensors(data(s)[1]))
        assert STEP_HOOKS.fns == [], STEP_HOOKS.fns        # nothing left polling
    # (the first call traces, and DDP's gradient hooks poll as eagerly; the last one ran the
    # compiled program alone)
    assert step.cache_info().misses == 1, step.cache_info()
    assert (len(CALLS) > 0) != THREAD, (len(CALLS), THREAD)
    same(m, reference(3), "compiled step")
    assert pump_running() == THREAD
    print("ok progress_compiled_step", flush=True)


def check_compiled_model():
    m = net()
    m.compile()
    ddp = DDP(m, bucket_cap_mb=1 / 2048)
    opt = tj.optim.SGD(ddp.parameters(), lr=0.1)
    for s in range(3):
        opt.zero_grad()
        loss_fn(ddp, *tensors(data(s)[1])).backward()
        opt.step()
    same(m, reference(3), "compiled model")
    print("ok progress_compiled_model", flush=True)


check_compiled_step()
check_compiled_model()
dist.destroy_process_group()
