"""A plain `python` run is a world of 1 (no MPI needed): the API, errors for bad arguments,
DDP equal to plain training, collectives inside compiled functions, the launcher's command."""
import numpy as np
import pytest

import tracejit as tj
import tracejit.distributed as dist
from tracejit.distributed import ReduceOp
from tracejit.distributed import run as launcher
from tracejit.nn.parallel import DistributedDataParallel as DDP


def test_not_initialized_errors():
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="Default process group has not been initialized"):
        dist.get_rank()
    with pytest.raises(RuntimeError, match="not been initialized"):
        dist.all_reduce(tj.ones(2))


def test_world_of_one(world_of_one):
    assert dist.is_initialized() and dist.get_rank() == 0 and dist.get_world_size() == 1
    assert dist.get_local_rank() == 0
    with pytest.raises(RuntimeError, match="twice"):
        dist.init_process_group()
    x = tj.tensor([1.0, 2.0])
    for op in (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.MAX, ReduceOp.MIN, ReduceOp.PRODUCT):
        dist.all_reduce(x, op=op)
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0])
    w = dist.all_reduce(x, async_op=True)
    assert w.wait() and w.is_completed()
    outs = [tj.zeros(2)]
    dist.all_gather(outs, x)
    np.testing.assert_array_equal(outs[0].numpy(), [1.0, 2.0])
    out = tj.zeros(2)
    dist.reduce_scatter_tensor(out, x)
    np.testing.assert_array_equal(out.numpy(), [1.0, 2.0])
    objs = [{"a": 1}]
    dist.broadcast_object_list(objs, src=0)
    assert objs == [{"a": 1}]
    dist.barrier()


def test_bad_arguments_name_the_op_and_shapes(world_of_one):
    x = tj.tensor([1.0, 2.0])
    with pytest.raises(TypeError, match=r"all_reduce: ReduceOp.AVG needs a floating-point "
                                        r"tensor, got i64\[2\].*test_distributed_world1.py"):
        dist.all_reduce(tj.tensor([1, 2]), op=ReduceOp.AVG)
    with pytest.raises(TypeError, match="op must be a ReduceOp"):
        dist.all_reduce(x, op="sum")
    with pytest.raises(TypeError, match="must be a tracejit Tensor, got ndarray"):
        dist.all_reduce(np.ones(2))
    with pytest.raises(ValueError, match=r"broadcast: src=3 is not a rank of a world of 1"):
        dist.broadcast(x, src=3)
    with pytest.raises(ValueError, match=r"output_tensor f32\[3\] must have the dtype of "
                                         r"input_tensor f32\[2\] and world_size \(1\) times"):
        dist.all_gather_into_tensor(tj.zeros(3), x)
    with pytest.raises(ValueError, match=r"tensor_list must be a list of world_size \(1\)"):
        dist.all_gather([tj.zeros(2), tj.zeros(2)], x)
    with pytest.raises(ValueError, match=r"tensor_list\[0\] is f32\[3\], but tensor is f32\[2\]"):
        dist.all_gather([tj.zeros(3)], x)
    with pytest.raises(ValueError, match="reduce_scatter_tensor: input f32\\[2\\] must have"):
        dist.reduce_scatter_tensor(tj.zeros(3), x)
    with pytest.raises(ValueError, match="unknown backend 'gloo'"):
        dist.destroy_process_group()
        dist.init_process_group("gloo")
    dist.init_process_group()


@pytest.mark.parametrize("as_view", [False, True])
def test_ddp_in_a_world_of_one_is_plain_training(world_of_one, as_view):
    def net():
        tj.manual_seed(3)
        return tj.nn.Sequential(tj.nn.Linear(5, 7, dtype=tj.float64), tj.nn.Tanh(),
                                tj.nn.Linear(7, 2, dtype=tj.float64))
    a, b = net(), net()
    ddp = DDP(a, bucket_cap_mb=1 / 8192, gradient_as_bucket_view=as_view)
    assert ddp.module is a and len(ddp.reducer.buckets) > 1
    oa = tj.optim.Adam(ddp.parameters(), lr=0.01)
    ob = tj.optim.Adam(b.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    for _ in range(4):
        x = tj.tensor(rng.standard_normal((6, 5)))
        for model, opt in ((ddp, oa), (b, ob)):
            opt.zero_grad()
            (model(x) ** 2).mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-12)
    (ddp(x) ** 2).mean().backward()
    flats = [bk.flat for bk in ddp.reducer.buckets]
    for p in a.parameters():             # gradient_as_bucket_view: .grad is bucket memory
        assert any(np.shares_memory(p.grad.numpy(), f) for f in flats) == as_view
    assert list(ddp.state_dict()) == ["module." + k for k in b.state_dict()]


def test_collectives_inside_a_compiled_function_are_graph_operations(world_of_one):
    @tj.compile
    def f(x):
        y = x * 3
        dist.all_reduce(y, op=ReduceOp.SUM)
        return y + 1

    low = f.lower(tj.ones(3))
    assert "dist_all_reduce" in low.as_text()
    np.testing.assert_array_equal(f(tj.ones(3)).numpy(), [4.0, 4.0, 4.0])


def test_a_collective_of_a_constant_is_not_folded_at_compile_time(world_of_one):
    """On ranks other than a broadcast's source the operand is a constant (zeros): the
    collective must still run at every call, on every rank."""
    @tj.compile
    def h(x):
        c = tj.zeros(3)
        dist.all_reduce(c)
        return x + c

    text = h.lower(tj.ones(3)).as_text()
    assert "dist_all_reduce" in text, text
    np.testing.assert_array_equal(h(tj.ones(3)).numpy(), [1.0, 1.0, 1.0])


def test_compiled_step_starts_each_bucket_during_backward(world_of_one):
    """In a compiled training step, each bucket's all-reduce starts where its last gradient
    is made (between the backward GEMMs, in the kernel plan the program runs in order) and is
    waited for only at the end of backward."""
    tj.manual_seed(0)
    m = tj.nn.Sequential(tj.nn.Linear(4, 8), tj.nn.Tanh(), tj.nn.Linear(8, 8), tj.nn.Tanh(),
                         tj.nn.Linear(8, 1))
    ddp = DDP(m, bucket_cap_mb=1 / 32768)       # 32 bytes: five buckets
    opt = tj.optim.SGD(ddp.parameters(), lr=0.1)

    @tj.compile
    def step(x):
        opt.zero_grad()
        (ddp(x) ** 2).mean().backward()
        opt.step()

    plan = step.lower(tj.ones(3, 4)).kernels
    plan = plan if isinstance(plan, str) else str(plan)
    lines = plan.splitlines()
    starts = [i for i, ln in enumerate(lines) if "dist_bucket_start" in ln]
    waits = [i for i, ln in enumerate(lines) if "dist_bucket_wait" in ln]
    gemms = [i for i, ln in enumerate(lines) if "matmul" in ln]
    assert len(starts) == len(waits) == len(ddp.reducer.buckets) >= 3, plan
    assert starts[0] < gemms[-1] < waits[0], plan     # bucket 0 starts before backward ends
    assert max(starts) < min(waits), plan
    before = [p.detach().numpy().copy() for p in m.parameters()]
    step(tj.ones(3, 4))
    assert all((p.detach().numpy() != b).any() for p, b in zip(m.parameters(), before))


def test_launcher_command_line():
    cmd, env = launcher.build(3, ["train.py", "--lr", "0.1"], "/x/mpiexec", ["-H", "a,b"], 30)
    assert cmd[:3] == ["/x/mpiexec", "-n", "3"]
    assert cmd[-5:] == ["-m", "mpi4py", "train.py", "--lr", "0.1"]
    assert env["MPIEXEC_TIMEOUT"] == "30"
