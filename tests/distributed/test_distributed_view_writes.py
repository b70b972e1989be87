"""In-place collectives and DDP's reducer write through the in-place path (tracer.inplace.store):
a view's new value reaches its base, the shared version counter moves, the base's other views
follow. A world of 1 in this process; 2 ranks under mpiexec (view_writes_worker.py)."""
import numpy as np

import tracejit as tj
import tracejit.distributed as dist
from tracejit.distributed import ReduceOp
from tracejit.nn.parallel import DistributedDataParallel as DDP

from dist_launch import launch, oks, report
from view_grads import flat_grads, grads_as_views

CHECKS = ["view_all_reduce", "view_broadcast_gather", "ddp_view_grads", "ddp_view_params"]


def test_all_reduce_of_a_view_in_a_world_of_one(world_of_one):
    base = tj.arange(6.0)
    tail, other = base[2:], base[1:3]
    dist.all_reduce(tail, op=ReduceOp.SUM)       # was: "assignment destination is read-only"
    assert base.tolist() == [0, 1, 2, 3, 4, 5] and other.tolist() == [1, 2]
    assert base._version_count == tail._version_count == 1
    grid = tj.arange(6.0).view(2, 3)
    work = dist.all_reduce(grid.t(), op=ReduceOp.AVG, async_op=True)
    work.wait()
    assert grid.tolist() == [[0, 1, 2], [3, 4, 5]] and grid._version_count == 1


def test_broadcast_and_all_gather_into_views_in_a_world_of_one(world_of_one):
    base = tj.zeros(4)
    dist.broadcast(base[1:3], src=0)
    assert base._version_count == 1
    flat = tj.zeros(4)
    dist.all_gather([flat[1:3]], tj.tensor([5.0, 6.0]))
    assert flat.tolist() == [0, 5, 6, 0] and flat._version_count == 1


def test_ddp_writes_averaged_gradients_into_view_grads_in_a_world_of_one(world_of_one):
    tj.manual_seed(0)
    model = tj.nn.Linear(3, 2)
    ddp = DDP(model)
    params = list(model.parameters())
    flat = grads_as_views(params)
    x = tj.tensor(np.arange(12, dtype=np.float32).reshape(4, 3))
    ddp(x).pow(2).sum().backward()
    ref = tj.nn.Linear(3, 2)
    ref.load_state_dict(model.state_dict())
    ref(x).pow(2).sum().backward()
    np.testing.assert_allclose(flat.numpy(), flat_grads(ref), rtol=1e-6)
    assert all(p.grad._view.root is flat for p in params)


def test_view_writes_on_two_ranks():
    proc = launch("view_writes_worker.py", CHECKS, nproc=2)
    assert proc.returncode == 0, report(proc)
    assert oks(proc) == {c: 2 for c in CHECKS}, report(proc)
