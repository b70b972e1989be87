"""Run under mpiexec by test_distributed_ddp_review.py: a compiled model under DDP whose
parameter also gets a gradient from outside the compiled backward (an eager penalty term) or
has a gradient hook, or a DDP dropped between its forward and a backward; the gradients must
be those of eager DDP (every contribution averaged, hooks on the local gradient) or, once DDP
is dropped, the rank's own, checked against a single-process reference. Prints "ok <name>"
per passed check."""
import gc
import weakref

import numpy as np

import tracejit as tj
import tracejit.distributed as dist
from tracejit.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group(timeout=60)
RANK, WORLD = dist.get_rank(), dist.get_world_size()
X = np.random.default_rng(0).standard_normal((4 * WORLD, 4))


def net():
    tj.manual_seed(5)
    return tj.nn.Sequential(tj.nn.Linear(4, 8, dtype=tj.float64), tj.nn.Tanh(),
                            tj.nn.Linear(8, 1, dtype=tj.float64))


def shard(rank):
    return tj.tensor(X[rank * 4:(rank + 1) * 4])


def penalty(w, rank):
    return (w ** 2).sum() * (1.0 + rank)       # different on each rank


def check(model, ref, what):
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=f"{what}: gradient of {n}")
    print(f"ok {what}", flush=True)


def penalty_outside_the_compiled_model(compiled):
    ref = net()
    total = sum((ref(shard(r)) ** 2).mean() + penalty(ref[0].weight, r) for r in range(WORLD))
    (total / WORLD).backward()
    m = net()
    if compiled:
        m.compile()
    ddp = DDP(m, bucket_cap_mb=1 / 1024)
    ((ddp(shard(RANK)) ** 2).mean() + penalty(m[0].weight, RANK)).backward()
    check(m, ref, f"penalty_{'compiled' if compiled else 'eager'}")


def clip(g):
    return g.clamp(-0.05, 0.05)


def gradient_hook(compiled):
    ref = net()
    grads = []
    for r in range(WORLD):          # the hook clips each rank's local gradient
        for p in ref.parameters():
            p.grad = None
        (ref(shard(r)) ** 2).mean().backward()
        grads.append([p.grad.numpy().copy() for p in ref.parameters()])
    for k, p in enumerate(ref.parameters()):
        local = [g[k] for g in grads]
        if k == 0:
            local = [np.clip(g, -0.05, 0.05) for g in local]
        p.grad = tj.tensor(np.mean(local, axis=0))
    m = net()
    m[0].weight.register_hook(clip)
    if compiled:
        m.compile()
    ddp = DDP(m, bucket_cap_mb=1 / 1024)
    (ddp(shard(RANK)) ** 2).mean().backward()
    check(m, ref, f"hook_{'compiled' if compiled else 'eager'}")


def dropped_between_forward_and_backward(compiled):
    """A DDP whose forward ran (grad enabled) and that was then dropped: the module's own
    backward afterwards gives this rank's gradients (PyTorch's reducer removes its hooks
    when destroyed); the reducer is not kept alive."""
    m = net()
    if compiled:
        m.compile()
    ddp = DDP(m)
    ddp(shard(RANK))
    reducer = weakref.ref(ddp.reducer)
    del ddp
    gc.collect()
    assert reducer() is None
    for p in m.parameters():
        p.grad = None
    (m(shard(RANK)) ** 2).mean().backward()
    ref = net()
    (ref(shard(RANK)) ** 2).mean().backward()
    check(m, ref, f"dropped_{'compiled' if compiled else 'eager'}")


for compiled in (False, True):
    penalty_outside_the_compiled_model(compiled)
    gradient_hook(compiled)
    dropped_between_forward_and_backward(compiled)
