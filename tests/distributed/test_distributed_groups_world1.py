"""Process groups in a plain `python` run (a world of 1, no MPI): new_group, group= on the
collectives, eager and compiled, DDP(process_group=), and the argument errors."""
import numpy as np
import pytest

import tracejit as tj
import tracejit.distributed as dist
from tracejit.distributed import GroupMember, ReduceOp
from tracejit.nn.parallel import DistributedDataParallel as DDP


def test_groups_in_a_world_of_one(world_of_one):
    g = dist.new_group([0])
    assert dist.get_rank(g) == 0 and dist.get_world_size(g) == 1
    assert dist.get_process_group_ranks(g) == [0] and dist.get_global_rank(g, 0) == 0
    x = tj.tensor([1.0, 2.0])
    dist.all_reduce(x, op=ReduceOp.AVG, group=g)
    dist.broadcast(x, src=0, group=g)
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0])
    out = tj.zeros(2)
    dist.all_gather_into_tensor(out, x, group=g)
    np.testing.assert_array_equal(out.numpy(), [1.0, 2.0])

    @tj.compile
    def f(t):
        y = t * 3
        dist.all_reduce(y, group=g)
        return y
    np.testing.assert_array_equal(f(x).numpy(), [3.0, 6.0])
    model = tj.nn.Linear(2, 1)
    ddp = DDP(model, process_group=g)
    ddp(tj.ones(3, 2)).sum().backward()
    np.testing.assert_array_equal(model.weight.grad.numpy(), [[3.0, 3.0]])
    assert GroupMember.WORLD is not None and dist.get_rank(GroupMember.WORLD) == 0


def test_group_argument_errors(world_of_one):
    with pytest.raises(ValueError, match=r"ranks \[0, 1\] must be a non-empty list of ranks"):
        dist.new_group([0, 1])
    with pytest.raises(ValueError, match="must be a non-empty list"):
        dist.new_group([])
    g = dist.new_group([0])
    with pytest.raises(ValueError, match=r"src=1 is not a rank of the group of ranks \[0\]"):
        dist.broadcast(tj.ones(2), src=1, group=g)
    with pytest.raises(ValueError, match="group_src=1 is not a rank of a group of 1"):
        dist.broadcast(tj.ones(2), group=g, group_src=1)
    with pytest.raises(TypeError, match="group must be a process group from new_group"):
        dist.all_reduce(tj.ones(2), group="everyone")
    dist.destroy_process_group(g)
    with pytest.raises(RuntimeError, match="was destroyed"):
        dist.all_reduce(tj.ones(2), group=g)
    assert dist.get_rank(GroupMember.NON_GROUP_MEMBER) == -1
    with pytest.warns(UserWarning, match="not a member of the group"):
        assert dist.all_reduce(tj.ones(2), group=GroupMember.NON_GROUP_MEMBER) is None


def test_ddp_compile_spellings_world_of_one(world_of_one):
    """ddp.compile(), tj.compile(ddp) and DDP(tj.compile(model)) train like the plain model."""
    def run(make):
        tj.manual_seed(2)
        model = tj.nn.Sequential(tj.nn.Linear(3, 8, dtype=tj.float64), tj.nn.Tanh(),
                                 tj.nn.Linear(8, 1, dtype=tj.float64))
        net = make(model)
        opt = tj.optim.SGD(model.parameters(), lr=0.1)
        for k in range(3):
            opt.zero_grad()
            x = tj.tensor(np.linspace(-1, 1, 12).reshape(4, 3) * (k + 1))
            (net(x) ** 2).mean().backward()
            opt.step()
        return [p.detach().numpy() for p in model.parameters()]

    def compiled_ddp(m):
        d = DDP(m)
        d.compile()
        return d
    want = run(lambda m: m)
    for make in (compiled_ddp, lambda m: tj.compile(DDP(m)), lambda m: DDP(tj.compile(m))):
        for a, b in zip(run(make), want):
            np.testing.assert_allclose(a, b, rtol=1e-12)
