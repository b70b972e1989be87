"""Run under mpiexec by test_distributed_ddp_step.py: a compiled DDP training step (forward,
backward and the optimizer in one tj.compile) on each rank's shard against single-process
training on the full batch (float64), and the order of its events at run time; prints one
line per passed check ("ok <name>")."""
import sys

import numpy as np

import tracejit as tj
import tracejit.distributed as dist
from tracejit.ir.prims_collective import RUNNERS
from tracejit.nn.parallel import DistributedDataParallel as DDP
from tracejit.runtime import llvm_backend

from mse_steps import mse_step

dist.init_process_group(timeout=60)
RANK, WORLD = dist.get_rank(), dist.get_world_size()
ROWS, D, H = 6, 5, 24          # fc2.weight (24x24 float64, 4.6 KB) is larger than a 1 KiB bucket


class Net(tj.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = tj.nn.Linear(D, H, dtype=tj.float64)
        self.fc2 = tj.nn.Linear(H, H, dtype=tj.float64)
        self.out = tj.nn.Linear(H, 1, dtype=tj.float64)
        self.spare = tj.nn.Linear(H, 1, dtype=tj.float64)

    def forward(self, x, use_spare=True):
        h = tj.tanh(self.fc2(tj.tanh(self.fc1(x))))
        return self.out(h) + 0.5 * self.spare(h) if use_spare else self.out(h)


def full_batch(step):
    rng = np.random.default_rng(700 + step)
    return rng.standard_normal((ROWS * WORLD, D)), rng.standard_normal((ROWS * WORLD, 1))


def mine(a):
    return a[RANK * ROWS:(RANK + 1) * ROWS]


def loss_of(model, x, y, use_spare=True):
    return ((model(tj.tensor(x), use_spare) - tj.tensor(y)) ** 2).mean()


def optimizer(kind, params):
    if kind == "sgd":
        return tj.optim.SGD(params, lr=0.05, momentum=0.9)
    return tj.optim.AdamW(params, lr=0.01, weight_decay=0.1)


def start_models(hook=False):
    """(model on this rank, the same model for the reference), after DDP's broadcast."""
    tj.manual_seed(70 + RANK)          # different on each rank: DDP broadcasts rank 0's
    model, ref = Net(), Net()
    if hook:
        for m in (model, ref):
            m.fc2.weight.register_hook(lambda g: g * 3)
    return model, ref


def reference(ref, init, kind, steps, accumulate=1, spare_at=lambda s: True):
    ref.load_state_dict(init)
    opt = optimizer(kind, ref.parameters())
    for s in range(steps):
        opt.zero_grad()
        for k in range(accumulate):
            x, y = full_batch(s * accumulate + k)
            (loss_of(ref, x, y, spare_at(s)) / accumulate).backward()
        opt.step()
    return ref


def same(model, ref, what):
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=f"{what}: parameter {n}")


def train(kind, cap_mb, what, hook=False, as_view=False):
    model, ref = start_models(hook)
    ddp = DDP(model, bucket_cap_mb=cap_mb, gradient_as_bucket_view=as_view)
    init = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    opt = optimizer(kind, ddp.parameters())

    step = tj.compile(mse_step(ddp, opt))

    for s in range(5):
        x, y = full_batch(s)
        step(tj.tensor(mine(x)), tj.tensor(mine(y)))
    same(model, reference(ref, init, kind, 5), what)
    print(f"ok {what}", flush=True)


def check_clip():
    """clip_grad_norm_ between backward and AdamW (the gradients' norm over all buckets, then
    an in-place scale of each .grad), clipping at every step, against the full batch."""
    model, ref = start_models()
    ddp = DDP(model, bucket_cap_mb=1 / 1024)
    init = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}

    def run(net, params, step_of):
        opt = optimizer("adamw", params)

        def step(x, y):
            opt.zero_grad()
            ((net(x) - y) ** 2).mean().backward()
            norm = tj.nn.utils.clip_grad_norm_(net.parameters(), 0.1)
            opt.step()
            return norm
        step = step_of(step)
        norms = []
        for s in range(5):
            x, y = full_batch(s)
            if net is ddp:
                x, y = mine(x), mine(y)
            norms.append(float(step(tj.tensor(x), tj.tensor(y))))
        return norms
    got = run(ddp, ddp.parameters(), tj.compile)
    ref.load_state_dict(init)
    want = run(ref, ref.parameters(), lambda f: f)
    assert min(want) > 0.1, want                # every step clips
    np.testing.assert_allclose(got, want, rtol=1e-10)
    same(model, ref, "clip")
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, atol=1e-12)
    print("ok clip", flush=True)


def check_no_sync():
    """Two micro-batches per step: the first's backward under no_sync() (compiled on its own),
    the second's and the optimizer in a compiled step that averages the accumulated .grad."""
    model, ref = start_models()
    ddp = DDP(model, bucket_cap_mb=1 / 1024)
    init = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    opt = optimizer("adamw", ddp.parameters())

    @tj.compile
    def local(x, y):
        with ddp.no_sync():
            (((ddp(x) - y) ** 2).mean() / 2).backward()

    @tj.compile
    def synced(x, y):
        (((ddp(x) - y) ** 2).mean() / 2).backward()
        opt.step()
        opt.zero_grad()

    seq = ddp.process_group.seq
    for s in range(5):
        for k in range(2):
            x, y = full_batch(s * 2 + k)
            (synced if k else local)(tj.tensor(mine(x)), tj.tensor(mine(y)))
            if not k:
                assert ddp.process_group.seq == seq, "no_sync communicated"
        seq = ddp.process_group.seq
    same(model, reference(ref, init, "adamw", 5, accumulate=2), "no_sync")
    print("ok no_sync", flush=True)


def check_unused():
    """find_unused_parameters=True, with `spare` unused at every third step (a trace of its
    own): its gradient then stays None on every rank, as in the single-process reference."""
    model, ref = start_models()
    ddp = DDP(model, bucket_cap_mb=1 / 1024, find_unused_parameters=True)
    init = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    opt = optimizer("sgd", ddp.parameters())

    def step(x, y, use_spare):
        opt.zero_grad()
        ((ddp(x, use_spare) - y) ** 2).mean().backward()
        opt.step()
    step = tj.compile(step, static_argnums=(2,))

    def spare_at(s):
        return s % 3 != 1
    for s in range(5):
        x, y = full_batch(s)
        step(tj.tensor(mine(x)), tj.tensor(mine(y)), spare_at(s))
        if not spare_at(s):
            assert model.spare.weight.grad is None
    same(model, reference(ref, init, "sgd", 5, spare_at=spare_at), "unused")
    print("ok unused", flush=True)


def check_order():
    """At run time: bucket 0's all-reduce starts on the flat array the program wrote its
    gradients into (this rank's gradients at that moment), with backward GEMMs still to run,
    and every wait comes after backward's last GEMM; the flat array then holds the sum over
    ranks (the division by the world size is the optimizer's, as it reads), and the
    parameters are those of one full-batch step."""
    model, ref = start_models()
    ddp = DDP(model, bucket_cap_mb=1 / 1024)
    init = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    opt = tj.optim.SGD(ddp.parameters(), lr=0.05)

    @tj.compile
    def step(x, y):
        opt.zero_grad()
        ((ddp(x) - y) ** 2).mean().backward()
        opt.step()

    log = []
    start, wait = RUNNERS["dist_bucket_start"], RUNNERS["dist_bucket_wait"]

    def logged_start(flat, pieces, **kw):
        log.append(("start", flat.copy(), flat, list(pieces)))
        return start(flat, pieces, **kw)

    def logged_wait(ticket, pieces, **kw):
        log.append(("wait",))
        return wait(ticket, pieces, **kw)

    class _NP:                  # the backend's BLAS calls, seen through its NumPy
        def __getattr__(self, name):
            return getattr(np, name)

        def matmul(self, *a, **kw):
            log.append(("gemm",))
            return np.matmul(*a, **kw)
    RUNNERS["dist_bucket_start"], RUNNERS["dist_bucket_wait"] = logged_start, logged_wait
    llvm_backend.np = _NP()
    try:
        x, y = full_batch(0)
        step(tj.tensor(mine(x)), tj.tensor(mine(y)))
    finally:
        RUNNERS["dist_bucket_start"], RUNNERS["dist_bucket_wait"] = start, wait
        llvm_backend.np = np
    kinds = [e[0] for e in log]
    starts = [i for i, k in enumerate(kinds) if k == "start"]
    gemms = [i for i, k in enumerate(kinds) if k == "gemm"]
    buckets = ddp.reducer.buckets
    assert len(starts) == len(buckets) >= 2 and kinds.count("wait") == len(buckets), kinds
    assert starts[0] < gemms[-1] < kinds.index("wait"), kinds
    ref.load_state_dict(init)
    loss_of(ref, mine(x), mine(y)).backward()
    local = {n: p.grad.numpy().copy() for n, p in ref.named_parameters()}
    ref.zero_grad()
    loss_of(ref, x, y).backward()
    average = {n: p.grad.numpy().copy() for n, p in ref.named_parameters()}
    for i, b in zip(starts, buckets):
        _, at_start, flat, pieces = log[i]
        for name, piece, off, n in zip(b.names, pieces, b.offsets, b.numels):
            assert np.shares_memory(piece, flat), name
            np.testing.assert_allclose(at_start[off:off + n], local[name].ravel(),
                                       rtol=1e-10, atol=1e-12, err_msg=name)
            np.testing.assert_allclose(flat[off:off + n], WORLD * average[name].ravel(),
                                       rtol=1e-10, atol=1e-12, err_msg=name)
    same(model, reference(ref, init, "sgd", 1), "order")
    print("ok order", flush=True)


CHECKS = {"sgd": lambda: train("sgd", 1 / 1024, "sgd"),
          "adamw": lambda: train("adamw", 1 / 1024, "adamw"),
          "one_bucket": lambda: train("adamw", 25, "one_bucket"),
          "hook": lambda: train("sgd", 1 / 1024, "hook", hook=True),
          "no_sync": check_no_sync, "unused": check_unused, "order": check_order,
          "clip": check_clip,
          "as_view": lambda: train("adamw", 1 / 1024, "as_view", as_view=True)}

for name in sys.argv[1:]:
    CHECKS[name]()
dist.destroy_process_group()
