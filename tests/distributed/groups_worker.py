"""Run under mpiexec -n 4 by test_distributed_groups.py: process groups from new_group(ranks)
and group= on the collectives, against NumPy (each rank knows every rank's input); DDP on a
group against single-process training on that group's full batch. "ok <check>" per rank."""
import sys
import warnings

import numpy as np

import tracejit as tj
import tracejit.distributed as dist
from tracejit.distributed import GroupMember, ReduceOp
from tracejit.nn.parallel import DistributedDataParallel as DDP

from mse_steps import mse_step

dist.init_process_group("mpi", timeout=60)
RANK, W = dist.get_rank(), dist.get_world_size()
assert W == 4, W


def data(rank, shape=(3, 4)):
    return np.random.default_rng(10 + rank).integers(-4, 5, shape).astype(np.float64)


def groups_basics():
    even, odd = dist.new_group([0, 2]), dist.new_group([3, 1])      # order does not matter
    mine, other = (even, odd) if RANK % 2 == 0 else (odd, even)
    members = [0, 2] if RANK % 2 == 0 else [1, 3]
    assert other is GroupMember.NON_GROUP_MEMBER
    assert dist.get_rank(mine) == members.index(RANK) and dist.get_world_size(mine) == 2
    assert dist.get_rank(other) == -1 and dist.get_world_size(other) == -1
    assert dist.get_process_group_ranks(mine) == members
    assert dist.get_global_rank(mine, 1) == members[1]
    assert dist.get_group_rank(mine, RANK) == members.index(RANK)

    x = tj.tensor(data(RANK))
    dist.all_reduce(x, group=mine)
    np.testing.assert_array_equal(x.numpy(), sum(data(r) for r in members))
    x = tj.tensor(data(RANK))
    dist.all_reduce(x, op=ReduceOp.MAX, group=mine)
    np.testing.assert_array_equal(x.numpy(), np.maximum(*[data(r) for r in members]))
    # the default group, between the groups' collectives
    x = tj.tensor(data(RANK))
    dist.all_reduce(x)
    np.testing.assert_array_equal(x.numpy(), sum(data(r) for r in range(W)))
    # src is a rank of the default group, group_src one of the group (as torch)
    x = tj.tensor(data(RANK))
    dist.broadcast(x, src=members[1], group=mine)
    np.testing.assert_array_equal(x.numpy(), data(members[1]))
    x = tj.tensor(data(RANK))
    dist.broadcast(x, group=mine, group_src=0)
    np.testing.assert_array_equal(x.numpy(), data(members[0]))
    out = tj.zeros(6, 4, dtype=tj.float64)
    dist.all_gather_into_tensor(out, tj.tensor(data(RANK)), group=mine)
    np.testing.assert_array_equal(out.numpy(), np.concatenate([data(r) for r in members]))
    outs = [tj.zeros(3, 4, dtype=tj.float64) for _ in members]
    dist.all_gather(outs, tj.tensor(data(RANK)), group=mine)
    for o, r in zip(outs, members):
        np.testing.assert_array_equal(o.numpy(), data(r))
    red = tj.zeros(2, 4, dtype=tj.float64)
    dist.reduce_scatter_tensor(red, tj.tensor(data(RANK, (4, 4))), group=mine)
    k = members.index(RANK)
    np.testing.assert_array_equal(red.numpy(), sum(data(r, (4, 4)) for r in members)[2 * k:2 * k + 2])
    objs = [None, None]
    dist.all_gather_object(objs, {"rank": RANK}, group=mine)
    assert objs == [{"rank": r} for r in members], objs
    lst = [RANK]
    dist.broadcast_object_list(lst, src=members[1], group=mine)
    assert lst == [members[1]], lst
    w = dist.all_reduce(tj.tensor(data(RANK)), group=mine, async_op=True)
    w.wait()
    dist.barrier(group=mine)
    # src outside the group: a clear error before any communication
    try:
        dist.broadcast(tj.tensor(data(RANK)), src=other_rank(members), group=mine)
    except ValueError as e:
        assert f"is not a rank of the group of ranks {members}" in str(e), e
    else:
        raise AssertionError("src outside the group accepted")
    # a rank outside the group: the collective does nothing here, with a warning (as torch)
    x = tj.tensor(data(RANK))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert dist.all_reduce(x, group=other) is None
    np.testing.assert_array_equal(x.numpy(), data(RANK))
    assert any("not a member of the group" in str(c.message) for c in caught), caught
    # a group of one, and the whole world as a group
    solo = [dist.new_group([r]) for r in range(W)][RANK]
    x = tj.tensor(data(RANK))
    dist.all_reduce(x, group=solo)
    np.testing.assert_array_equal(x.numpy(), data(RANK))
    everyone = dist.new_group()
    x = tj.tensor(data(RANK))
    dist.all_reduce(x, op=ReduceOp.AVG, group=everyone)
    np.testing.assert_allclose(x.numpy(), sum(data(r) for r in range(W)) / W, rtol=1e-15)
    dist.destroy_process_group(everyone)
    try:
        dist.all_reduce(x, group=everyone)
    except RuntimeError as e:
        assert "was destroyed" in str(e), e
    else:
        raise AssertionError("a destroyed group still worked")
    print("ok groups_basics", flush=True)


def other_rank(members):
    return next(r for r in range(W) if r not in members)


def groups_compiled():
    """A collective on a group inside a compiled function runs on that group at every call."""
    low, high = dist.new_group([0, 1]), dist.new_group([2, 3])
    mine = low if RANK < 2 else high

    @tj.compile
    def f(x):
        y = x * 2
        dist.all_reduce(y, group=mine)
        z = y + 1
        dist.all_reduce(z)                   # and one on the default group
        return z
    for k in range(3):
        got = f(tj.tensor(data(RANK) + k)).numpy()
        # every rank's z = (sum over its group of 2 x) + 1; then summed over all 4 ranks
        want = sum(sum(2 * (data(s) + k) for s in ([0, 1] if r < 2 else [2, 3])) + 1
                   for r in range(W))
        np.testing.assert_allclose(got, want, rtol=1e-14)
    assert f.cache_info().misses == 1, f.cache_info()
    print("ok groups_compiled", flush=True)


class Net(tj.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = tj.nn.Linear(5, 16, dtype=tj.float64)
        self.fc2 = tj.nn.Linear(16, 1, dtype=tj.float64)

    def forward(self, x):
        return self.fc2(tj.tanh(self.fc1(x)))


def group_batch(group_index, step):
    rng = np.random.default_rng(500 + 10 * group_index + step)
    return rng.standard_normal((8, 5)), rng.standard_normal((8, 1))


def ddp_on_groups(compiled_step):
    """Two DDP replicas side by side, on ranks [0, 1] and [2, 3], each averaging only within
    its group: each matches single-process training on its group's full batch."""
    groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    gi = RANK // 2
    pg = groups[gi]
    tj.manual_seed(1000 + RANK)         # differs per rank: DDP broadcasts the group's rank 0
    model = Net()
    ddp = DDP(model, process_group=pg, bucket_cap_mb=1 / 4096)
    assert ddp.process_group is pg and len(ddp.reducer.buckets) >= 2
    init = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    owners = [None] * 2
    dist.all_gather_object(owners, init["fc1.weight"], group=pg)
    np.testing.assert_array_equal(owners[0], owners[1])
    opt = tj.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)

    step = mse_step(ddp, opt)
    run = tj.compile(step) if compiled_step else step
    for s in range(4):
        x, y = group_batch(gi, s)
        half = RANK % 2
        run(tj.tensor(x[4 * half:4 * half + 4]), tj.tensor(y[4 * half:4 * half + 4]))
    ref = Net()
    ref.load_state_dict(init)
    ropt = tj.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for s in range(4):
        x, y = group_batch(gi, s)
        ropt.zero_grad()
        ((ref(tj.tensor(x)) - tj.tensor(y)) ** 2).mean().backward()
        ropt.step()
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=n)
    print("ok ddp_groups" + ("_compiled" if compiled_step else ""), flush=True)


def mismatched_ranks():
    """Ranks that pass different lists to new_group: an error on every rank naming each
    rank's list (last: it leaves the default group failed)."""
    try:
        dist.new_group([0, 1] if RANK != 3 else [0, 1, 3])
    except dist.DistError as e:
        msg = str(e)
        assert "rank 0: new_group (ranks=[0, 1])" in msg, msg
        assert "rank 3: new_group (ranks=[0, 1, 3])" in msg, msg
        print(f"ok mismatched_ranks: {msg}", flush=True)
    else:
        raise AssertionError("no error")


CHECKS = {"groups_basics": groups_basics, "groups_compiled": groups_compiled,
          "ddp_groups": lambda: ddp_on_groups(False),
          "ddp_groups_compiled": lambda: ddp_on_groups(True),
          "mismatched_ranks": mismatched_ranks}
for name in sys.argv[1:]:
    CHECKS[name]()
