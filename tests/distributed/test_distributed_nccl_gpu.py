"""Real NCCL on a GPU, in a world of 1 (one GPU cannot check several ranks: multi-GPU NCCL is
only exercised through the fake NCCL of test_distributed_nccl_fake.py). Marked `gpu`; skipped
cleanly without CuPy and a GPU."""
import numpy as np
import pytest

import tracejit as tj
import tracejit.distributed as dist
from tracejit.distributed import ReduceOp
from tracejit.nn.parallel import DistributedDataParallel as DDP

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")]


def test_nccl_collectives_world_of_one(nccl_world_of_one):
    from tracejit.distributed.group import current
    assert current().gpu_backend is not None       # a real NcclCommunicator was made
    for dtype in (np.float32, np.float64, np.float16, np.int32, np.int64):
        x = (np.arange(10) % 5).astype(dtype)
        for op in (ReduceOp.SUM, ReduceOp.MAX, ReduceOp.MIN, ReduceOp.PRODUCT, ReduceOp.AVG):
            if op is ReduceOp.AVG and np.dtype(dtype).kind == "i":
                continue
            t = tj.tensor(x, device="cuda")
            dist.all_reduce(t, op=op, async_op=True).wait()
            np.testing.assert_array_equal(t.to("cpu").numpy(), x)
    t = tj.tensor(np.arange(6.0), device="cuda")
    dist.broadcast(t, src=0)
    np.testing.assert_array_equal(t.to("cpu").numpy(), np.arange(6.0))
    out = tj.zeros(6, dtype=tj.float64, device="cuda")
    dist.all_gather_into_tensor(out, t)
    np.testing.assert_array_equal(out.to("cpu").numpy(), np.arange(6.0))
    out = tj.zeros(6, dtype=tj.float64, device="cuda")
    dist.reduce_scatter_tensor(out, t * 2)
    np.testing.assert_array_equal(out.to("cpu").numpy(), 2 * np.arange(6.0))
    b = tj.tensor(np.array([True, False]), device="cuda")
    dist.all_reduce(b)
    np.testing.assert_array_equal(b.to("cpu").numpy(), [True, False])


def test_ddp_on_gpu_world_of_one_matches_cpu_training(nccl_world_of_one):
    def net():
        tj.manual_seed(4)
        return tj.nn.Sequential(tj.nn.Linear(6, 16, dtype=tj.float64), tj.nn.Tanh(),
                                tj.nn.Linear(16, 1, dtype=tj.float64))
    gpu_model, cpu_model = net().to("cuda"), net()
    ddp = DDP(gpu_model, bucket_cap_mb=1 / 1024)
    og = tj.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    oc = tj.optim.SGD(cpu_model.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x, y = rng.standard_normal((8, 6)), rng.standard_normal((8, 1))
        og.zero_grad()
        ((ddp(tj.tensor(x, device="cuda")) - tj.tensor(y, device="cuda")) ** 2).mean().backward()
        og.step()
        oc.zero_grad()
        ((cpu_model(tj.tensor(x)) - tj.tensor(y)) ** 2).mean().backward()
        oc.step()
    for p, q in zip(gpu_model.parameters(), cpu_model.parameters()):
        np.testing.assert_allclose(p.detach().to("cpu").numpy(), q.detach().numpy(),
                                   rtol=1e-9, atol=1e-12)


def test_all_reduce_inside_a_compiled_function_on_gpu(nccl_world_of_one):
    @tj.compile
    def f(x):
        y = x * 2
        dist.all_reduce(y, op=ReduceOp.AVG)
        return y + 1

    x = tj.tensor(np.arange(5.0), device="cuda")
    np.testing.assert_array_equal(f(x).to("cpu").numpy(), np.arange(5.0) * 2 + 1)


def test_ddp_compiled_step_on_gpu_world_of_one(nccl_world_of_one):
    """The whole step compiled on the GPU: each bucket's all-reduce started mid-backward on
    NCCL's stream and waited for at the end, as graph operations; equal to CPU training."""
    def net():
        tj.manual_seed(5)
        return tj.nn.Sequential(tj.nn.Linear(6, 16, dtype=tj.float64), tj.nn.Tanh(),
                                tj.nn.Linear(16, 1, dtype=tj.float64))
    gpu_model, cpu_model = net().to("cuda"), net()
    ddp = DDP(gpu_model, bucket_cap_mb=1 / 1024)
    og = tj.optim.SGD(ddp.parameters(), lr=0.1)
    oc = tj.optim.SGD(cpu_model.parameters(), lr=0.1)

    @tj.compile
    def step(x, y):
        og.zero_grad()
        ((ddp(x) - y) ** 2).mean().backward()
        og.step()

    rng = np.random.default_rng(2)
    for _ in range(3):
        x, y = rng.standard_normal((8, 6)), rng.standard_normal((8, 1))
        step(tj.tensor(x, device="cuda"), tj.tensor(y, device="cuda"))
        oc.zero_grad()
        ((cpu_model(tj.tensor(x)) - tj.tensor(y)) ** 2).mean().backward()
        oc.step()
    for p, q in zip(gpu_model.parameters(), cpu_model.parameters()):
        np.testing.assert_allclose(p.detach().to("cpu").numpy(), q.detach().numpy(),
                                   rtol=1e-9, atol=1e-12)


def test_nccl_on_a_new_group_world_of_one(nccl_world_of_one):
    """new_group([0]) gets its own NCCL communicator; DDP(process_group=) averages on it."""
    from tracejit.distributed.group import current
    g = dist.new_group([0])
    t = tj.tensor(np.arange(4.0), device="cuda")
    dist.all_reduce(t, op=ReduceOp.AVG, group=g)
    np.testing.assert_array_equal(t.to("cpu").numpy(), np.arange(4.0))
    assert g.gpu_backend is not None and g.gpu_backend is not current().gpu_backend
    model = tj.nn.Linear(3, 1, dtype=tj.float64).to("cuda")
    ddp = DDP(model, process_group=g)
    ddp(tj.ones(2, 3, dtype=tj.float64, device="cuda")).sum().backward()
    np.testing.assert_array_equal(model.weight.grad.to("cpu").numpy(), np.full((1, 3), 2.0))


def test_compiled_backward_with_nccl_all_reduces_inside(nccl_world_of_one):
    """A compiled model's backward rebuilt with bucket all-reduces inside (runtime/grad_sync.py)
    running real NCCL on the GPU: gradients equal the plain compiled backward's."""
    from grad_sync_helpers import grads
    from tracejit.runtime import grad_sync

    class Buckets:
        def __init__(self, params):
            self.params = params

        def compiled_plan(self, tensors):
            where = {id(t): i for i, t in enumerate(tensors)}
            pos = [where[id(p)] for p in self.params]
            return grad_sync.Plan((tuple(pos[:2]), tuple(pos[2:])), 1, 0)

    tj.manual_seed(6)
    model = tj.nn.Sequential(tj.nn.Linear(6, 16, dtype=tj.float64), tj.nn.Tanh(),
                             tj.nn.Linear(16, 1, dtype=tj.float64)).to("cuda")
    model.compile()
    x = tj.tensor(np.random.default_rng(3).standard_normal((8, 6)), device="cuda")

    plain = grads(model, x)
    synced = grads(model, x, Buckets(list(model.parameters())[::-1]))
    for a, b in zip(plain, synced):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
