"""Run under mpiexec by test_distributed_nccl.py: the NCCL backend's plumbing against the fake
NCCL of fakenccl.py (the same buffers moved over MPI), with argv[1] GPUs per node."""
import sys

import numpy as np

import fakenccl

sys.modules["cupy"] = fakenccl.module(devices=int(sys.argv[1]))

import tracejit as tj  # noqa: E402
import tracejit.distributed as dist  # noqa: E402
from tracejit.distributed import ReduceOp  # noqa: E402
from tracejit.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

dist.init_process_group("nccl", timeout=60)
RANK, W = dist.get_rank(), dist.get_world_size()


def gpu(a):
    return tj.tensor(a, device="cuda")


def host(t):
    return t.to("cpu").numpy()


def check_collectives():
    for dtype in (np.float32, np.float64, np.int64, np.float16):
        for op in (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.MAX, ReduceOp.MIN, ReduceOp.PRODUCT):
            if op is ReduceOp.AVG and dtype == np.int64:
                continue
            xs = [(np.arange(6) % 4 + r).astype(dtype) for r in range(W)]
            t = gpu(xs[RANK])
            fakenccl.LOG.clear()
            w = dist.all_reduce(t, op=op, async_op=True)
            w.wait()
            want = {ReduceOp.SUM: sum(xs), ReduceOp.AVG: sum(xs) / W, ReduceOp.MAX:
                    np.max(xs, 0), ReduceOp.MIN: np.min(xs, 0),
                    ReduceOp.PRODUCT: np.prod(xs, 0)}[op]
            np.testing.assert_allclose(host(t), want.astype(dtype), rtol=1e-3)
            kinds = [e[0] for e in fakenccl.LOG]
            # producers' event, the communication stream waits, NCCL, done event, and the
            # caller's stream waits for it: no host synchronization anywhere
            assert kinds == ["record", "wait_event", "nccl", "record", "wait_event"], \
                fakenccl.LOG
            assert fakenccl.LOG[2][2] != 0 and fakenccl.LOG[4][1] == 0, fakenccl.LOG
    b = gpu(np.array([RANK == 0, RANK == 1, False]))
    dist.all_reduce(b)                      # bool: sum is any
    np.testing.assert_array_equal(host(b), [True, W > 1, False])
    t = gpu(np.full(3, float(RANK)))
    dist.broadcast(t, src=W - 1)
    np.testing.assert_array_equal(host(t), np.full(3, float(W - 1)))
    out = gpu(np.zeros(2 * W))
    dist.all_gather_into_tensor(out, gpu(np.full(2, float(RANK))))
    np.testing.assert_array_equal(host(out), np.repeat(np.arange(W, dtype=float), 2))
    out = gpu(np.zeros(2))
    dist.reduce_scatter_tensor(out, gpu(np.arange(2.0 * W) + RANK), op=ReduceOp.SUM)
    np.testing.assert_array_equal(host(out), sum(np.arange(2.0 * W) + r for r in range(W))
                                  [2 * RANK:2 * RANK + 2])
    print("ok nccl_collectives", flush=True)


def check_ddp():
    def net(seed):
        tj.manual_seed(seed)
        return tj.nn.Sequential(tj.nn.Linear(4, 8, dtype=tj.float64), tj.nn.Tanh(),
                                tj.nn.Linear(8, 1, dtype=tj.float64))
    model = net(10 + RANK).to("cuda")
    ddp = DDP(model, bucket_cap_mb=1 / 4096)
    ref = net(0)
    ref.load_state_dict({k: v.to("cpu") for k, v in model.state_dict().items()})
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((4 * W, 4)), rng.standard_normal((4 * W, 1))
    mine = slice(RANK * 4, RANK * 4 + 4)
    fakenccl.LOG.clear()
    ((ddp(gpu(x[mine])) - gpu(y[mine])) ** 2).mean().backward()
    assert [e for e in fakenccl.LOG if e[0] == "nccl"], "no NCCL collective in backward"
    ((ref(tj.tensor(x)) - tj.tensor(y)) ** 2).mean().backward()
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        np.testing.assert_allclose(host(p.grad), q.grad.numpy(), rtol=1e-10, err_msg=n)
    print("ok nccl_ddp", flush=True)


def check_default_backend_makes_nccl_on_first_gpu_collective():
    """backend=None: MPI for CPU tensors, NCCL created at the first GPU collective."""
    from tracejit.distributed.group import current
    dist.destroy_process_group()
    dist.init_process_group(timeout=60)
    assert dist.get_backend() == "cpu:mpi,cuda:nccl" and current().gpu_backend is None
    c = tj.tensor(np.full(2, float(RANK)))
    dist.all_reduce(c)
    assert current().gpu_backend is None
    t = gpu(np.full(2, float(RANK)))
    fakenccl.LOG.clear()
    dist.all_reduce(t)
    assert current().gpu_backend is not None and [e for e in fakenccl.LOG if e[0] == "nccl"]
    np.testing.assert_array_equal(host(t), host(gpu(c.numpy())))
    print("ok nccl_default_backend", flush=True)


def check_groups():
    """A group from new_group gets its own NCCL communicator (its unique id broadcast over the
    group's MPI communicator); DDP(process_group=) on "cuda" tensors averages through it."""
    from tracejit.distributed.group import current
    pair = dist.new_group([1, 0])
    solo = [dist.new_group([r]) for r in range(W)][RANK]
    fakenccl.LOG.clear()
    t = gpu(np.full(3, RANK + 1.0))
    dist.all_reduce(t, group=pair)
    np.testing.assert_array_equal(host(t), np.full(3, W * (W + 1) / 2))
    assert pair.gpu_backend is not None and pair.gpu_backend is not current().gpu_backend
    assert [e for e in fakenccl.LOG if e[0] == "nccl"], "no NCCL collective on the group"
    t = gpu(np.full(2, RANK + 1.0))
    dist.broadcast(t, src=1, group=pair)
    np.testing.assert_array_equal(host(t), np.full(2, 2.0))
    t = gpu(np.full(2, RANK + 1.0))
    dist.all_reduce(t, group=solo)
    np.testing.assert_array_equal(host(t), np.full(2, RANK + 1.0))
    tj.manual_seed(3 + RANK)
    model = tj.nn.Linear(4, 1, dtype=tj.float64).to("cuda")
    ddp = DDP(model, process_group=pair)
    w0 = host(model.weight.detach()).copy()
    x = gpu(np.full((2, 4), RANK + 1.0))
    ddp(x).sum().backward()
    # d/dW of sum(x W^T + b) = column sums of x; averaged over the two ranks: 2 * 1.5
    np.testing.assert_allclose(host(model.weight.grad), np.full((1, 4), 3.0), rtol=1e-12)
    everyone = [None] * W
    dist.all_gather_object(everyone, w0)
    np.testing.assert_array_equal(everyone[0], everyone[1])    # broadcast from group rank 0
    print("ok nccl_groups", flush=True)


for name in sys.argv[2:]:
    {"collectives": check_collectives, "ddp": check_ddp, "groups": check_groups,
     "default": check_default_backend_makes_nccl_on_first_gpu_collective}[name]()
dist.destroy_process_group()
