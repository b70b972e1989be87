"""Run under mpiexec by test_distributed_ddp.py: DDP training on each rank's shard against
single-process training on the whole batch (computed on every rank, in float64), in eager mode,
with a compiled model, with a compiled training step, with no_sync accumulation and with
unused parameters; prints one line per passed check ("ok <name>") for the test to count."""
import sys

import numpy as np

import tracejit as tj
import tracejit.distributed as dist
from tracejit.nn.parallel import DistributedDataParallel as DDP

from mse_steps import mse_step

dist.init_process_group(timeout=60)
RANK, WORLD = dist.get_rank(), dist.get_world_size()
B, D, H = 8 * WORLD, 6, 40          # W1 (40x6) fits a bucket of 1 KiB, W2 (40x40) does not


class Net(tj.nn.Module):
    def __init__(self, unused: bool = False):
        super().__init__()
        self.fc1 = tj.nn.Linear(D, H, dtype=tj.float64)
        self.fc2 = tj.nn.Linear(H, H, dtype=tj.float64)
        self.out = tj.nn.Linear(H, 1, dtype=tj.float64)
        if unused:
            self.spare = tj.nn.Linear(H, 3, dtype=tj.float64)

    def forward(self, x):
        return self.out(tj.tanh(self.fc2(tj.tanh(self.fc1(x)))))


def batch(step):
    rng = np.random.default_rng(100 + step)
    return rng.standard_normal((B, D)), rng.standard_normal((B, 1))


def shard(a):
    n = a.shape[0] // WORLD
    return a[RANK * n:(RANK + 1) * n]


def loss_fn(model, x, y):
    return ((model(tj.tensor(x)) - tj.tensor(y)) ** 2).mean()


def reference(init_state, steps, accumulate=1, unused=False):
    """Single process, full batch: the result DDP must reproduce."""
    model = Net(unused)
    model.load_state_dict(init_state)
    opt = tj.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for s in range(steps):
        opt.zero_grad()
        for k in range(accumulate):
            x, y = batch(s * accumulate + k)
            (loss_fn(model, x, y) / accumulate).backward()
        opt.step()
    return model


def make_ddp(unused=False, **kw):
    tj.manual_seed(1000 + RANK)     # different on each rank: DDP must broadcast rank 0's
    model = Net(unused)
    ddp = DDP(model, bucket_cap_mb=1 / 1024, **kw)
    init = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return ddp, model, init


def same(model, ref, what):
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=f"{what}: parameter {n}")
        if p.grad is not None or q.grad is not None:
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=f"{what}: gradient of {n}")


def check_broadcast_at_construction():
    ddp, model, init = make_ddp()
    gathered = [None] * WORLD
    dist.all_gather_object(gathered, init["fc1.weight"])
    for g in gathered:
        np.testing.assert_array_equal(g, gathered[0])
    assert len(ddp.reducer.buckets) >= 2, len(ddp.reducer.buckets)
    # buckets hold the parameters in reverse order: the output layer's first
    assert ddp.reducer.buckets[0].params[0] is model.out.bias
    print("ok broadcast", flush=True)


def train_eager(compiled_model=False):
    ddp, model, init = make_ddp()
    if compiled_model:
        model.compile()
    opt = tj.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    for s in range(5):
        opt.zero_grad()
        x, y = batch(s)
        loss_fn(ddp, shard(x), shard(y)).backward()
        opt.step()
    same(model, reference(init, 5), "compiled model" if compiled_model else "eager")
    print("ok " + ("compiled_model" if compiled_model else "eager"), flush=True)


def train_compiled_model_variants(set_to_none):
    """A compiled model: with .grad None before each backward, every bucket is all-reduced
    inside the compiled backward; with zero_grad(set_to_none=False), and for the backward
    after no_sync() accumulation, the hooks average the accumulated .grad instead. Both match
    the full-batch reference."""
    ddp, model, init = make_ddp()
    model.compile()
    ddp.reducer.record_events = True
    opt = tj.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    nb = len(ddp.reducer.buckets)
    for s in range(3):
        opt.zero_grad(set_to_none=set_to_none)
        for k in range(2):
            x, y = batch(s * 2 + k)
            if k == 0:
                with ddp.no_sync():
                    (loss_fn(ddp, shard(x), shard(y)) / 2).backward()
                continue
            (loss_fn(ddp, shard(x), shard(y)) / 2).backward()
            inside = [b for kind, b in ddp.reducer.events if kind == "in backward"]
            # after no_sync every .grad holds the local part: the hooks average it
            assert inside == [], ddp.reducer.events
        opt.step()
    same(model, reference(init, 3, accumulate=2), f"compiled model no_sync {set_to_none}")
    ddp, model, init = make_ddp()
    model.compile()
    ddp.reducer.record_events = True
    opt = tj.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    for s in range(5):
        opt.zero_grad(set_to_none=set_to_none)
        x, y = batch(s)
        loss_fn(ddp, shard(x), shard(y)).backward()
        inside = [b for kind, b in ddp.reducer.events if kind == "in backward"]
        # (zero_grad(set_to_none=False) leaves a .grad that was never made None)
        assert inside == (list(range(nb)) if set_to_none or s == 0 else []), \
            (s, ddp.reducer.events)
        opt.step()
    same(model, reference(init, 5), f"compiled model set_to_none={set_to_none}")
    print(f"ok compiled_model_{'none' if set_to_none else 'zeros'}", flush=True)


def compiled_model_autograd_grad():
    """autograd.grad through a DDP-wrapped compiled model returns this rank's own gradients
    (as eagerly: only backward() averages); the next backward() averages again."""
    ddp, model, init = make_ddp()
    model.compile()
    ref = Net()
    ref.load_state_dict(init)
    x, y = batch(0)
    got = tj.autograd.grad(loss_fn(ddp, shard(x), shard(y)), list(model.parameters()))
    want = tj.autograd.grad(loss_fn(ref, shard(x), shard(y)), list(ref.parameters()))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)
    loss_fn(ddp, shard(x), shard(y)).backward()
    loss_fn(ref, x, y).backward()
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, atol=1e-12)
    print("ok compiled_model_autograd_grad", flush=True)


def compiled_wrappers():
    """DDP(tj.compile(model)), ddp.compile() and tj.compile(ddp) run the wrapped module
    compiled (DDP's forward stays eager) and match the reference, with the buckets averaged
    inside the compiled backward; a compiled function that traces a DDP forward but leaves its
    backward outside (its later calls could not arm the reduction) is an error at its first
    backward instead of silently unaveraged gradients."""
    for how in ("DDP(tj.compile(model))", "ddp.compile()", "tj.compile(ddp)"):
        tj.manual_seed(1000 + RANK)
        model = Net()
        ddp = DDP(tj.compile(model) if how.startswith("DDP") else model,
                  bucket_cap_mb=1 / 1024)
        if how == "ddp.compile()":
            ddp.compile()
        elif how == "tj.compile(ddp)":
            assert tj.compile(ddp) is ddp
        assert ddp.module is model and len(list(ddp.parameters())) == 6
        init = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        ddp.reducer.record_events = True
        opt = tj.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        for s in range(5):
            opt.zero_grad()
            x, y = batch(s)
            loss_fn(ddp, shard(x), shard(y)).backward()
            assert ("in backward", 0) in ddp.reducer.events, (how, ddp.reducer.events)
            opt.step()
        same(model, reference(init, 5), how)
    ddp, model, init = make_ddp()
    run = tj.compile(lambda x: ddp(x))
    x, y = batch(0)
    try:
        ((run(tj.tensor(shard(x))) - tj.tensor(shard(y))) ** 2).mean().backward()
    except RuntimeError as e:
        assert "forward ran inside a compiled function whose backward runs outside" in str(e)
        assert "ddp.compile()" in str(e)
    else:
        raise AssertionError("a compiled DDP forward trained without an error")
    print("ok compiled_wrappers", flush=True)


def compiled_overlap_order():
    """In a compiled model's CPU backward, each bucket's all-reduce starts right after the
    program step that completes it, in bucket order, with backward steps still to run after
    bucket 0's start (MPI is progressed between them). The program wrote this rank's
    gradients straight into the bucket's flat array (what it holds when its all-reduce
    starts), which is averaged in place. (The GPU's rebuilt graph with the all-reduces as
    graph operations: tests/runtime/test_grad_sync_backward.py.)"""
    ddp, model, init = make_ddp()
    model.compile()
    red = ddp.reducer
    red.record_events = True
    log = []
    start, progress = red.start_bucket, red.progress
    red.start_bucket = lambda flat: (log.append(("start", (flat.copy(), flat))), start(flat))[1]
    red.progress = lambda: (log.append(("progress", None)), progress())[1]
    x, y = batch(0)
    loss_fn(ddp, shard(x), shard(y)).backward()
    kinds = [k for k, _ in log]
    starts = [i for i, k in enumerate(kinds) if k == "start"]
    nb = len(red.buckets)
    assert len(starts) == nb >= 2, kinds
    assert "progress" in kinds[starts[0] + 1:starts[-1]], kinds
    assert [b for k, b in red.events if k == "in backward"] == list(range(nb)), red.events
    assert [b for k, b in red.events if k == "start"] == list(range(nb)), red.events
    local, full = Net(), Net()
    local.load_state_dict(init)
    full.load_state_dict(init)
    loss_fn(local, shard(x), shard(y)).backward()
    loss_fn(full, x, y).backward()
    mine, avg = dict(local.named_parameters()), dict(full.named_parameters())
    for b, i in zip(red.buckets, starts):
        at_start, flat = log[i][1]
        for name, p, off, n in zip(b.names, b.params, b.offsets, b.numels):
            np.testing.assert_allclose(at_start[off:off + n], mine[name].grad.numpy().ravel(),
                                       rtol=1e-12, atol=1e-14, err_msg=name)
            np.testing.assert_allclose(flat[off:off + n], avg[name].grad.numpy().ravel(),
                                       rtol=1e-10, atol=1e-12, err_msg=name)
            np.testing.assert_array_equal(p.grad.numpy().ravel(), flat[off:off + n])
    print("ok compiled_overlap_order", flush=True)


def train_compiled_step():
    ddp, model, init = make_ddp()
    opt = tj.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)

    step = tj.compile(mse_step(ddp, opt))

    for s in range(5):
        x, y = batch(s)
        step(tj.tensor(shard(x)), tj.tensor(shard(y)))
    info = step.cache_info()       # the first step creates the momentum buffers: 2 traces
    assert info.misses <= 2 and info.hits >= 3, info
    ref = reference(init, 5)
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=f"compiled step: parameter {n}")
    print("ok compiled_step", flush=True)


def train_no_sync():
    ddp, model, init = make_ddp()
    opt = tj.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    seq_before = ddp.process_group.seq
    for s in range(3):
        opt.zero_grad()
        for k in range(2):
            x, y = batch(s * 2 + k)
            if k == 0:
                with ddp.no_sync():
                    (loss_fn(ddp, shard(x), shard(y)) / 2).backward()
                assert ddp.process_group.seq == seq_before, "no_sync communicated"
            else:
                (loss_fn(ddp, shard(x), shard(y)) / 2).backward()
        seq_before = ddp.process_group.seq
        opt.step()
    same(model, reference(init, 3, accumulate=2), "no_sync")
    print("ok no_sync", flush=True)


def train_unused(compiled=False):
    ddp, model, init = make_ddp(unused=True, find_unused_parameters=True)
    opt = tj.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)

    def step(x, y):
        opt.zero_grad()
        ((ddp(x) - y) ** 2).mean().backward()
        opt.step()
    step = tj.compile(step) if compiled else step
    for s in range(3):
        x, y = batch(s)
        step(tj.tensor(shard(x)), tj.tensor(shard(y)))
    assert model.spare.weight.grad is None
    ref = reference(init, 3, unused=True)
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=f"find_unused_parameters: {n}")
    print("ok unused" + ("_compiled" if compiled else ""), flush=True)


def overlap_order():
    """Bucket 0's all-reduce starts before backward has produced the last gradient."""
    ddp, model, init = make_ddp()
    ddp.reducer.record_events = True
    x, y = batch(0)
    loss_fn(ddp, shard(x), shard(y)).backward()
    ev = ddp.reducer.events
    first_start = ev.index(("start", 0))
    last_ready = max(i for i, e in enumerate(ev) if e[0] == "ready")
    assert first_start < last_ready, ev
    starts = [b for kind, b in ev if kind == "start"]
    assert starts == sorted(starts), ev
    print("ok overlap_order", flush=True)


def buffers_follow_rank0(compiled):
    """broadcast_buffers: each forward starts from rank 0's buffers (BatchNorm's running
    statistics), then updates them with this rank's batch, as torch's DDP."""
    def net():
        tj.manual_seed(7)
        return tj.nn.Sequential(tj.nn.Linear(3, 4, dtype=tj.float64),
                                tj.nn.BatchNorm1d(4, dtype=tj.float64))
    model = net()
    ddp = DDP(model)
    run = tj.compile(lambda x: ddp(x)) if compiled else ddp
    xs = [np.random.default_rng(50 + r).standard_normal((6, 3)) for r in range(WORLD)]
    for _ in range(2):
        run(tj.tensor(xs[RANK]))
    ref = net()
    ref(tj.tensor(xs[0]))                  # rank 0's first forward, broadcast at the second
    ref(tj.tensor(xs[RANK]))               # then this rank's own batch
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(getattr(model[1], name).numpy(),
                                   getattr(ref[1], name).numpy(), rtol=1e-12, err_msg=name)
    print("ok buffers" + ("_compiled" if compiled else ""), flush=True)


CHECKS = {"broadcast": check_broadcast_at_construction, "eager": train_eager,
          "compiled_model": lambda: train_eager(True), "compiled_step": train_compiled_step,
          "compiled_model_none": lambda: train_compiled_model_variants(True),
          "compiled_model_zeros": lambda: train_compiled_model_variants(False),
          "compiled_overlap_order": compiled_overlap_order,
          "compiled_model_autograd_grad": compiled_model_autograd_grad,
          "compiled_wrappers": compiled_wrappers,
          "no_sync": train_no_sync, "unused": train_unused, "overlap_order": overlap_order,
          "unused_compiled": lambda: train_unused(True),
          "buffers": lambda: buffers_follow_rank0(False),
          "buffers_compiled": lambda: buffers_follow_rank0(True)}

for name in sys.argv[1:]:
    CHECKS[name]()
dist.destroy_process_group()
