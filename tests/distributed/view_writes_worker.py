"""Run under mpiexec by test_distributed_view_writes.py: in-place collectives on views write
through to their bases (and the bases' other views follow), all_gather into views, and DDP
averaging into `.grad`s that are views of one flat buffer. Prints "ok <check>" per check."""
import sys

import numpy as np

import tracejit as tj
import tracejit.distributed as dist
from tracejit.distributed import ReduceOp
from tracejit.nn.parallel import DistributedDataParallel as DDP
from view_grads import flat_grads, grads_as_views

dist.init_process_group(timeout=60)
RANK, W = dist.get_rank(), dist.get_world_size()
FACTORS = np.arange(1, W + 1, dtype=np.float32)      # rank r holds values times (r + 1)


def check_view_all_reduce():
    base = tj.arange(8.0) * float(RANK + 1)
    tail, mid = base[2:], base[3:6]
    w = tj.ones(2, requires_grad=True)
    hist = base[6:]
    hist.mul_(w)                    # a view with history: its array is its own, it follows
    dist.all_reduce(tail, op=ReduceOp.SUM)
    want = np.arange(8.0, dtype=np.float32) * FACTORS.sum()
    want[:2] = np.arange(2.0) * (RANK + 1)
    np.testing.assert_array_equal(base.detach().numpy(), want)
    np.testing.assert_array_equal(mid.detach().numpy(), want[3:6])
    np.testing.assert_array_equal(hist.detach().numpy(), want[6:])
    assert base._version_count == tail._version_count == 2

    grid = tj.arange(6.0).view(2, 3) * float(RANK + 1)
    t = grid.t()                    # a non-contiguous view, asynchronously
    work = dist.all_reduce(t, op=ReduceOp.AVG, async_op=True)
    work.wait()
    np.testing.assert_allclose(grid.numpy(), np.arange(6.0).reshape(2, 3) * FACTORS.mean())
    print("ok view_all_reduce", flush=True)


def check_view_broadcast_and_gather():
    base = tj.zeros(4) + float(RANK)
    dist.broadcast(base[1:3], src=W - 1)
    np.testing.assert_array_equal(base.numpy(), [RANK, W - 1, W - 1, RANK])
    flat = tj.zeros(2 * W)
    outs = [flat[2 * r:2 * r + 2] for r in range(W)]
    dist.all_gather(outs, tj.tensor([RANK, 10.0 * RANK]))
    np.testing.assert_array_equal(flat.numpy(), np.ravel([[r, 10.0 * r] for r in range(W)]))
    print("ok view_broadcast_gather", flush=True)


def _data(rank):
    rng = np.random.default_rng(rank)
    return rng.standard_normal((4, 3)).astype(np.float32)


def check_ddp_view_grads():
    tj.manual_seed(0)
    model = tj.nn.Linear(3, 2)
    ref = tj.nn.Linear(3, 2)
    ref.load_state_dict(model.state_dict())
    ddp = DDP(model)
    params = list(model.parameters())
    flat = grads_as_views(params)
    ddp(tj.tensor(_data(RANK))).pow(2).sum().backward()
    want = []
    for r in range(W):                  # every rank's local gradient, averaged
        ref.zero_grad()
        ref(tj.tensor(_data(r))).pow(2).sum().backward()
        want.append(flat_grads(ref))
    np.testing.assert_allclose(flat.numpy(), np.mean(want, axis=0), rtol=1e-5, atol=1e-6)
    assert all(p.grad._view.root is flat for p in params)
    print("ok ddp_view_grads", flush=True)


def check_ddp_broadcasts_into_view_parameters():
    flat = tj.zeros(8) + float(RANK)            # every rank starts from its own values
    model = tj.nn.Linear(3, 2)
    model.weight = tj.nn.Parameter(flat[:6].view(2, 3))
    model.bias = tj.nn.Parameter(flat[6:])
    DDP(model)                                  # rank 0's parameters, written into flat
    np.testing.assert_array_equal(flat.numpy(), np.zeros(8))
    print("ok ddp_view_params", flush=True)


CHECKS = {"view_all_reduce": check_view_all_reduce,
          "ddp_view_params": check_ddp_broadcasts_into_view_parameters,
          "view_broadcast_gather": check_view_broadcast_and_gather,
          "ddp_view_grads": check_ddp_view_grads}

for name in sys.argv[1:] or list(CHECKS):
    CHECKS[name]()
dist.destroy_process_group()
