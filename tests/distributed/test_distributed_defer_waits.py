"""ir/defer_waits.py: in a compiled DDP training step, the work that does not need a bucket's
all-reduce runs before the program waits for it. The order is read from the kernel plan the
compiled program runs step by step, in a world of one (the same graph as on N ranks; the
2-rank run is in test_distributed_defer_waits_ranks.py); the values against the reference
interpreter and against the same step run eagerly."""
import re

import numpy as np

import tracejit as tj
from tracejit.ir import dtypes as dt
from tracejit.ir.core import Aval, Graph
from tracejit.ir.defer_waits import defer_waits
from tracejit.ir.interpret import interpret
from tracejit.ir.primitives import P
from tracejit.ir.verify import verify
from tracejit.nn.parallel import DistributedDataParallel as DDP


def _net():
    tj.manual_seed(5)
    return tj.nn.Sequential(tj.nn.Linear(4, 8, dtype=tj.float64), tj.nn.Tanh(),
                            tj.nn.Linear(8, 8, dtype=tj.float64), tj.nn.Tanh(),
                            tj.nn.Linear(8, 1, dtype=tj.float64))


# 4.bias, 4.weight, 2.bias, 2.weight: 81 float64 (648 bytes) close bucket 0 at 600 bytes;
# 0.bias, 0.weight are bucket 1
CAP_MB = 600 / 2 ** 20


def _kernels(step, x):
    """[(kind and ops text, inputs, output)] of the compiled step's plan, in run order."""
    plan = str(step.lower(x).kernels)
    out = []
    for ln in plan.splitlines():
        m = re.search(r"ops\((.*?)\) in\((.*?)\) out\((.*?)\)", ln)
        if m:
            out.append((m.group(1), m.group(2).split(", "), m.group(3).split(", ")))
    return out


def _step(ddp, opt, clip):
    @tj.compile
    def step(x):
        opt.zero_grad()
        (ddp(x) ** 2).mean().backward()
        if clip:
            tj.nn.utils.clip_grad_norm_(ddp.parameters(), 0.01)
        opt.step()
    return step


def _waits(kernels):
    waits = [i for i, (ops, _, _) in enumerate(kernels) if ops == "dist_bucket_wait"]
    return waits, [kernels[i][2][0] for i in waits]


def test_bucket_0_updates_run_before_bucket_1_wait(world_of_one):
    m = _net()
    ddp = DDP(m, bucket_cap_mb=CAP_MB)
    assert [b.names for b in ddp.reducer.buckets] == [
        ["4.bias", "4.weight", "2.bias", "2.weight"], ["0.bias", "0.weight"]]
    opt = tj.optim.AdamW(ddp.parameters(), lr=0.05)
    x = tj.tensor(np.random.default_rng(0).standard_normal((3, 4)))
    ks = _kernels(_step(ddp, opt, clip=False), x)
    (w0, w1), (r0, r1) = _waits(ks)
    readers0 = [i for i, (_, ins, _) in enumerate(ks) if r0 in ins and i != w1]
    readers1 = [i for i, (_, ins, _) in enumerate(ks) if r1 in ins]
    # the updates of bucket 0's four parameters (AdamW: one kernel each) read bucket 0 and
    # run between the two waits; bucket 1's after its wait
    assert len(readers0) == 4 and all(w0 < i < w1 for i in readers0), ks
    assert len(readers1) == 2 and all(i > w1 for i in readers1), ks


def test_with_clipping_bucket_0_norms_run_before_bucket_1_wait(world_of_one):
    """clip_grad_norm_'s total norm needs every bucket, so every update waits for all of
    them; the norms of bucket 0's gradients do not, and run before bucket 1's wait."""
    m = _net()
    ddp = DDP(m, bucket_cap_mb=CAP_MB)
    opt = tj.optim.AdamW(ddp.parameters(), lr=0.05)
    x = tj.tensor(np.random.default_rng(0).standard_normal((3, 4)))
    ks = _kernels(_step(ddp, opt, clip=True), x)
    (w0, w1), (r0, r1) = _waits(ks)
    early = [i for i, (_, ins, _) in enumerate(ks) if r0 in ins and w0 < i < w1]
    assert early, ks
    assert all("sum" in ks[i][0] or "max" in ks[i][0] for i in early), ks


def test_deferred_step_trains_as_eagerly(world_of_one):
    """Five compiled AdamW steps with clipping, buckets reordered, equal five eager steps."""
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((3, 4)) for _ in range(5)]
    finals = []
    for compiled in (False, True):
        m = _net()
        ddp = DDP(m, bucket_cap_mb=CAP_MB)
        opt = tj.optim.AdamW(ddp.parameters(), lr=0.05)

        def step(x):
            opt.zero_grad()
            (ddp(x) ** 2).mean().backward()
            tj.nn.utils.clip_grad_norm_(ddp.parameters(), 0.01)
            opt.step()
        run = tj.compile(step) if compiled else step
        for x in xs:
            run(tj.tensor(x))
        finals.append([p.detach().numpy().copy() for p in m.parameters()])
    for a, b in zip(*finals):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def _two_bucket_graph():
    """x, y: two buckets started, then (in traced order) both waits, a value of bucket 1, a
    synchronous all-reduce between the waits' users, a value of bucket 0, one of neither."""
    g = Graph("steps")
    f = Aval((3,), dt.f64)
    x, y = g.add_input(f, "x"), g.add_input(f, "y")
    t0 = g.emit(P.dist_bucket_start, [x, x], {"op": 0})
    t1 = g.emit(P.dist_bucket_start, [y, t0], {"op": 0})
    w0 = g.emit(P.dist_bucket_wait, [t0, t0, x], {"op": 0})
    w1 = g.emit(P.dist_bucket_wait, [t1, w0, y], {"op": 0})
    a = g.emit(P.mul, [w1, w1], {})
    r = g.emit(P.dist_all_reduce, [a, t1], {"op": 0})
    b = g.emit(P.mul, [w0, w0], {})
    c = g.emit(P.add, [x, y], {})
    g.outputs = [r, b, c]
    return g


def test_defer_waits_order_and_values():
    g = _two_bucket_graph()
    args = [np.array([1.0, -2.0, 3.0]), np.array([0.5, 4.0, -1.0])]
    want = interpret(g, args)
    before = [ins.prim.name for ins in g.instrs]
    verify(defer_waits(g))
    after = [ins.prim.name for ins in g.instrs]
    assert before == ["dist_bucket_start", "dist_bucket_start", "dist_bucket_wait",
                      "dist_bucket_wait", "mul", "dist_all_reduce", "mul", "add"]
    # first what needs no wait, then wait 0 and its user, then wait 1 and its user; the
    # all-reduce keeps its place after every wait
    assert after == ["dist_bucket_start", "dist_bucket_start", "add", "dist_bucket_wait",
                     "mul", "dist_bucket_wait", "mul", "dist_all_reduce"]
    assert g.instrs[4].inputs[0] is g.instrs[3].out          # bucket 0's user after wait 0
    for got, w in zip(interpret(g, args), want):
        np.testing.assert_array_equal(got, w)


def test_defer_waits_leaves_graphs_without_waits_alone():
    g = Graph("plain")
    x = g.add_input(Aval((2,), dt.f32), "x")
    a = g.emit(P.mul, [x, x], {})
    b = g.emit(P.add, [a, x], {})
    g.outputs = [b]
    instrs = list(g.instrs)
    assert defer_waits(g).instrs == instrs
