"""Run under mpiexec -n 2 by test_distributed_sync_batchnorm.py (argv: the .npz of torch's
results, then the checks): SyncBatchNorm with each rank on its shard of the batch (shards of
different sizes, one of them empty) against BatchNorm on the full batch (torch's, from the
.npz, and tracejit's, float64, computed on every rank): outputs, running stats, eval outputs,
the input gradient and the weight/bias gradients summed over ranks; eagerly, inside
tj.compile, and converted with convert_sync_batchnorm under DDP (eager, and a compiled
training step). "ok <check>" per rank."""
import sys

import numpy as np

import tracejit as tj
import tracejit.distributed as dist
from tracejit.nn.parallel import DistributedDataParallel as DDP

from sync_bn_cases import CASES, COMPILED, EAGER, STEPS, arrays, conv_net, conv_x

dist.init_process_group(timeout=60)
RANK, W = dist.get_rank(), dist.get_world_size()
assert W == 2, W
TOL = dict(rtol=1e-10, atol=1e-12)
REF = dict(np.load(sys.argv[1]))


def split(a, sizes):
    """This rank's rows of a, the ranks holding sizes[r] rows each."""
    start = sum(sizes[:RANK])
    return a[start:start + sizes[RANK]]


def summed(g):
    """The sum over ranks of a local gradient."""
    t = tj.tensor(np.ascontiguousarray(g))
    dist.all_reduce(t)
    return t.numpy()


def check_case(name, compiled):
    kind, shape, sizes, momentum, affine, _ = CASES[name]
    x, gy, w, b = arrays(name)
    c = shape[1]
    own = getattr(tj.nn, kind)(c, momentum=momentum, affine=affine, dtype=tj.float64)
    sbn = tj.nn.SyncBatchNorm(c, momentum=momentum, affine=affine, dtype=tj.float64)
    for m in (own, sbn):
        if affine:
            with tj.no_grad():
                m.weight.copy_(tj.tensor(w))
                m.bias.copy_(tj.tensor(b))
    # the input is read from the closure: a compiled backward fills the .grad of what the
    # function captures, not of its arguments
    xs = tj.zeros(*split(x, sizes).shape, dtype=tj.float64, requires_grad=True)

    def step(gys):
        y = sbn(xs)
        (y * gys).sum().backward()
        return y

    run = tj.compile(step) if compiled else step
    for s in range(STEPS):
        with tj.no_grad():
            xs.copy_(tj.tensor(split(x + s, sizes)))
        xs.grad = None
        sbn.zero_grad()
        y = run(tj.tensor(split(gy, sizes))).detach().numpy()
        np.testing.assert_allclose(y, split(REF[f"{name}/y{s}"], sizes), **TOL)
        np.testing.assert_allclose(xs.grad.numpy(), split(REF[f"{name}/gx{s}"], sizes), **TOL)
        # tracejit's own BatchNorm on the full batch agrees too
        xf = tj.tensor(x + s, requires_grad=True)
        own.zero_grad()
        yf = own(xf)
        (yf * tj.tensor(gy)).sum().backward()
        np.testing.assert_allclose(y, split(yf.detach().numpy(), sizes), **TOL)
        np.testing.assert_allclose(xs.grad.numpy(), split(xf.grad.numpy(), sizes), **TOL)
    if affine:     # this rank's share: their sum over ranks is the full batch's
        np.testing.assert_allclose(summed(sbn.weight.grad.numpy()), REF[f"{name}/gw"], **TOL)
        np.testing.assert_allclose(summed(sbn.bias.grad.numpy()), REF[f"{name}/gb"], **TOL)
    np.testing.assert_allclose(sbn.running_mean.numpy(), REF[f"{name}/rm"], **TOL)
    np.testing.assert_allclose(sbn.running_var.numpy(), REF[f"{name}/rv"], **TOL)
    assert int(sbn.num_batches_tracked.item()) == STEPS
    sbn.eval()                  # running stats, no collective: each rank its own shard
    np.testing.assert_allclose(sbn(tj.tensor(split(x, sizes))).detach().numpy(),
                               split(REF[f"{name}/eval"], sizes), **TOL)


def sync_eager():
    for name in EAGER:
        check_case(name, False)
    print("ok sync_eager", flush=True)


def sync_compiled():
    for name in COMPILED:
        check_case(name, True)
    print("ok sync_compiled", flush=True)


def convert_ddp():
    """convert_sync_batchnorm on a conv net keeps its tensors; under DDP the averaged gradients
    times the world size are torch's on the full batch (the loss sums over samples)."""
    net = conv_net(tj)
    bn_weight = net[1].weight
    net = tj.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    assert isinstance(net[1], tj.nn.SyncBatchNorm) and net[1].weight is bn_weight
    ddp = DDP(net)
    ddp(tj.tensor(split(conv_x(), [2, 2]))).sum().backward()
    for i, q in enumerate(net.parameters()):
        np.testing.assert_allclose(q.grad.numpy() * W, REF[f"conv/g{i}"], **TOL)
    np.testing.assert_allclose(net[1].running_var.numpy(), REF["conv/rv"], **TOL)
    print("ok convert_ddp", flush=True)


def ddp_compiled_step():
    """A compiled DDP training step (SGD) of a converted net with two SyncBatchNorm layers and
    two gradient buckets: its backward interleaves SyncBatchNorm's all-reduces with the
    buckets'. Three steps on the shards equal tracejit's BatchNorm net on the full batch."""
    def build():
        tj.manual_seed(1)
        return tj.nn.Sequential(tj.nn.Conv2d(2, 3, 3, dtype=tj.float64),
                                tj.nn.BatchNorm2d(3, dtype=tj.float64), tj.nn.ReLU(),
                                tj.nn.Flatten(), tj.nn.Linear(27, 4, dtype=tj.float64),
                                tj.nn.BatchNorm1d(4, dtype=tj.float64))
    net, ref = tj.nn.SyncBatchNorm.convert_sync_batchnorm(build()), build()
    ddp = DDP(net, bucket_cap_mb=1e-4)
    opt, ref_opt = tj.optim.SGD(net.parameters(), lr=0.1), tj.optim.SGD(ref.parameters(), lr=0.1)

    @tj.compile
    def step(x):
        loss = (ddp(x) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    for s in range(3):
        x = np.random.default_rng(s).standard_normal((4, 2, 5, 5))
        step(tj.tensor(split(x, [2, 2])))
        (ref(tj.tensor(x)) ** 2).mean().backward()
        ref_opt.step()
        ref_opt.zero_grad()
    assert len(ddp.reducer.buckets) == 2, len(ddp.reducer.buckets)
    for p, q in zip(net.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), **TOL)
    for i in (1, 5):
        np.testing.assert_allclose(net[i].running_var.numpy(), ref[i].running_var.numpy(), **TOL)
    print("ok ddp_compiled_step", flush=True)


CHECKS = {"sync_eager": sync_eager, "sync_compiled": sync_compiled, "convert_ddp": convert_ddp,
          "ddp_compiled_step": ddp_compiled_step}
for check in sys.argv[2:]:
    CHECKS[check]()
dist.destroy_process_group()
