"""Benchmarks: W1-W6 against NumPy eager (and torch / jax when installed), plus tracing,
autograd and call overheads. Every figure is a median of repetitions measured in this one run;
compare ratios, not absolute times (machines are shared and noisy).

    python bench/run.py            # full run, prints a markdown table
    python bench/run.py --quick    # fewer repetitions
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads as W  # noqa: E402

import tracejit as tj  # noqa: E402

ROWS: list[dict] = []


def median_ms(fn, reps: int, warmup: int = 2, sync=None) -> float:
    """Median wall time of fn(); with `sync` (a GPU's synchronize) each call is waited for."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3


def row(workload: str, impl: str, ms: float, base: float | None, unit: str = "ms") -> None:
    ROWS.append({"workload": workload, "impl": impl, "value": ms, "unit": unit,
                 "vs_numpy": (base / ms) if base else None})


def peers():
    out = {}
    try:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
        out["torch"] = torch
    except ImportError:
        pass
    try:
        import jax
        out["jax"] = jax
    except ImportError:
        pass
    return out


def bench_arrays(args, reps, P):
    x, a, b = args["w1"]
    base = median_ms(lambda: W.w1_np(x, a, b), reps)
    row("W1 elementwise fwd", "numpy eager", base, base)
    f = tj.compile(W.w1)
    row("W1 elementwise fwd", "tracejit", median_ms(lambda: f(x, a, b), reps), base)
    for half in (tj.float16, tj.bfloat16):     # 16-bit storage, float32 arithmetic
        h = [v.astype(half.np) for v in (x, a, b)]
        row(f"W1 elementwise fwd, {half}", "tracejit", median_ms(lambda: f(*h), reps), base)
    base2 = median_ms(lambda: W.w2_np(x, a, b), reps)
    row("W2 grad of sum(W1)", "numpy by hand", base2, base2)
    g = tj.grad(tj.compile(W.w2_loss), argnums=(0, 1, 2))
    row("W2 grad of sum(W1)", "tracejit", median_ms(lambda: g(x, a, b), reps), base2)
    w3 = args["w3"]
    base3 = median_ms(lambda: W.w3_np(*w3), reps)
    row("W3 MLP step grads", "numpy by hand", base3, base3)
    row("W3 MLP step grads", "its 5 GEMMs (numpy)", median_ms(lambda: W.w3_gemms(*w3), reps),
        base3)
    g3 = tj.grad(tj.compile(W.w3_loss), argnums=(0, 1, 2, 3))
    row("W3 MLP step grads", "tracejit", median_ms(lambda: g3(*w3), reps), base3)
    (x4,) = args["w4"]
    base4 = median_ms(lambda: W.w4_np(x4), reps)
    row("W4 layer_norm+logsumexp grad", "numpy by hand", base4, base4)
    g4 = tj.grad(tj.compile(W.w4_loss))
    row("W4 layer_norm+logsumexp grad", "tracejit", median_ms(lambda: g4(x4), reps), base4)
    if "torch" in P:
        bench_torch(P["torch"], args, reps, (base, base2, base3, base4))
    if "jax" in P:
        bench_jax(P["jax"], args, reps, (base, base2, base3, base4))


def bench_torch(torch, args, reps, bases, device: str = "cpu", sync=None):
    T = lambda arrs: [torch.from_numpy(np.ascontiguousarray(a)).to(device)    # noqa: E731
                      for a in arrs]
    x, a, b = T(args["w1"])
    f1 = lambda x, a, b: torch.tanh(x * a + b) * torch.sigmoid(x) + 0.5 * x * x  # noqa: E731

    def f2(x, a, b):
        x, a, b = (t.detach().requires_grad_() for t in (x, a, b))
        return torch.autograd.grad(f1(x, a, b).sum(), (x, a, b))

    def f3(w1, b1, w2, b2, x, y):
        ps = [t.detach().requires_grad_() for t in (w1, b1, w2, b2)]
        h = torch.tanh(x @ ps[0] + ps[1])
        return torch.autograd.grad(torch.nn.functional.mse_loss(h @ ps[2] + ps[3], y), ps)

    def f4(x):
        x = x.detach().requires_grad_()
        h = torch.nn.functional.layer_norm(x, x.shape[-1:])
        return torch.autograd.grad((torch.logsumexp(h, -1) - h[:, 0]).mean(), x)
    w3, (x4,) = T(args["w3"]), T(args["w4"])
    for name, fn, fargs, base in [("W1 elementwise fwd", f1, (x, a, b), bases[0]),
                                  ("W2 grad of sum(W1)", f2, (x, a, b), bases[1]),
                                  ("W3 MLP step grads", f3, w3, bases[2]),
                                  ("W4 layer_norm+logsumexp grad", f4, (x4,), bases[3])]:
        row(name, "torch eager", median_ms(lambda: fn(*fargs), reps, sync=sync), base)
        try:
            cf = torch.compile(fn)
            row(name, "torch.compile", median_ms(lambda: cf(*fargs), reps, warmup=3, sync=sync),
                base)
        except Exception as e:          # torch.compile needs a C++ compiler at run time
            print(f"torch.compile failed on {name}: {type(e).__name__}", file=sys.stderr)


def bench_jax(jax, args, reps, bases):
    jnp = jax.numpy
    f1 = lambda x, a, b: jnp.tanh(x * a + b) * jax.nn.sigmoid(x) + 0.5 * x * x   # noqa: E731
    f2 = jax.jit(jax.grad(lambda x, a, b: f1(x, a, b).sum(), argnums=(0, 1, 2)))

    def l3(w1, b1, w2, b2, x, y):
        return jnp.mean((jnp.tanh(x @ w1 + b1) @ w2 + b2 - y) ** 2)

    def l4(x):
        mu = x.mean(-1, keepdims=True)
        h = (x - mu) / jnp.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
        return (jax.nn.logsumexp(h, -1) - h[:, 0]).mean()
    f3 = jax.jit(jax.grad(l3, argnums=(0, 1, 2, 3)))
    f4 = jax.jit(jax.grad(l4))
    j1 = jax.jit(f1)
    for name, fn, fargs, base in [("W1 elementwise fwd", j1, args["w1"], bases[0]),
                                  ("W2 grad of sum(W1)", f2, args["w1"], bases[1]),
                                  ("W3 MLP step grads", f3, args["w3"], bases[2]),
                                  ("W4 layer_norm+logsumexp grad", f4, args["w4"], bases[3])]:
        dev = [jnp.asarray(a) for a in fargs]
        run = lambda: jax.block_until_ready(fn(*dev))       # noqa: E731
        row(name, "jax.jit", median_ms(run, reps), base)


def bench_small_calls(P):
    x = np.arange(8, dtype=np.float32)
    n = 20000

    def per_call_us(fn):
        fn()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t) / n * 1e6
    base = per_call_us(lambda: x * 2 + 1)
    row("W5 cached call x*2+1, 8 floats", "numpy eager", base, base, "us")
    f = tj.compile(W.w5)
    row("W5 cached call x*2+1, 8 floats", "tracejit", per_call_us(lambda: f(x)), base, "us")
    if "jax" in P:
        jf = P["jax"].jit(W.w5)
        xd = P["jax"].numpy.asarray(x)
        row("W5 cached call x*2+1, 8 floats", "jax.jit",
            per_call_us(lambda: jf(xd).block_until_ready()), base, "us")
    if "torch" in P:
        xt = P["torch"].from_numpy(x)
        row("W5 cached call x*2+1, 8 floats", "torch eager", per_call_us(lambda: xt * 2 + 1),
            base, "us")


W6_SCRIPT = """
import sys, time
sys.path.insert(0, {bench!r})
import numpy as np, tracejit as tj, workloads as W
x = np.ones(1024, np.float32)
t = time.perf_counter(); tj.compile(W.w6_chain)(x); a = time.perf_counter() - t
t = time.perf_counter(); tj.grad(tj.compile(lambda v: W.w6_chain(v).sum()))(x)
b = time.perf_counter() - t
print(a, b)
"""


def bench_first_call():
    (x,) = W.inputs()["w6"]
    with tempfile.TemporaryDirectory() as d:
        os.environ["TRACEJIT_CACHE_DIR"] = d
        tj.compile(lambda v: v * 2)(x)                       # a warm process
        t = time.perf_counter()
        tj.compile(W.w6_chain)(x)
        row("W6 200-op chain, first call", "tracejit (cold cache)",
            (time.perf_counter() - t) * 1e3, None)
        t = time.perf_counter()
        tj.grad(tj.compile(lambda v: W.w6_chain(v).sum()))(x)
        row("W6 200-op chain, first grad call", "tracejit (cold cache)",
            (time.perf_counter() - t) * 1e3, None)
        env = dict(os.environ, TRACEJIT_CACHE_DIR=d)
        script = W6_SCRIPT.format(bench=os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
        row("W6 200-op chain, first call", "tracejit, new process, warm disk cache",
            float(out[0]) * 1e3, None)
        row("W6 200-op chain, first grad call", "tracejit, new process, warm disk cache",
            float(out[1]) * 1e3, None)
        del os.environ["TRACEJIT_CACHE_DIR"]
        chain = tj.compile(W.w6_chain)
        chain(x)
        row("W6 200-op chain, cached call", "tracejit", median_ms(lambda: chain(x), 50), None)


def bench_overheads(P):
    """Issue 2 and 3 figures: trace time, eager overhead, IR sizes, grad trace+transform."""
    from tracejit.ir.autodiff import vjp_graph
    from tracejit.tracer.trace import trace
    x = np.ones(8, np.float32)
    for n in (1000, 10000):
        def chain(v, n=n):
            for _ in range(n):
                v = v * 1.0001
            return v
        t = time.perf_counter()
        trace(chain, [x], {})
        row(f"trace a {n}-op function", "tracejit", (time.perf_counter() - t) * 1e3, None)
    a = tj.tensor(np.ones(8, np.float32), requires_grad=True)
    n = 20000
    t = time.perf_counter()
    y = a
    for _ in range(n):
        y = y * 1.0001
    row("eager op recorded for autograd", "tracejit", (time.perf_counter() - t) / n * 1e6, None,
        "us")
    t = time.perf_counter()
    y.sum().backward()
    row("eager backward node", "tracejit", (time.perf_counter() - t) / n * 1e6, None, "us")
    if "torch" in P:
        torch = P["torch"]
        at = torch.ones(8, requires_grad=True)
        t = time.perf_counter()
        y = at
        for _ in range(n):
            y = y * 1.0001
        row("eager op recorded for autograd", "torch eager",
            (time.perf_counter() - t) / n * 1e6, None, "us")
        t = time.perf_counter()
        y.sum().backward()
        row("eager backward node", "torch eager", (time.perf_counter() - t) / n * 1e6, None,
            "us")
    w3 = W.inputs()["w3"]
    fwd = trace(W.w3_loss, list(w3), {}).graph
    joint = vjp_graph(fwd, [0, 1, 2, 3], seed_first=True)
    row("MLP loss IR size (instructions)", "forward", len(fwd.instrs), None, "instrs")
    row("MLP loss IR size (instructions)", "forward+backward", len(joint.instrs), None, "instrs")
    xs = np.ones(1024, np.float32)
    t = time.perf_counter()
    g = trace(lambda v: W.w6_chain(v).sum(), [xs], {}).graph
    t1 = time.perf_counter()
    vjp_graph(g, [0], seed_first=True)
    t2 = time.perf_counter()
    row("grad of a 200-op chain", "trace", (t1 - t) * 1e3, None)
    row("grad of a 200-op chain", "reverse-mode transform", (t2 - t1) * 1e3, None)


def table() -> str:
    lines = ["| workload | implementation | median | vs numpy |", "|---|---|---|---|"]
    for r in ROWS:
        v = r["value"]
        val = f"{v:.3g} {r['unit']}" if r["unit"] != "instrs" else f"{int(v)}"
        ratio = f"{r['vs_numpy']:.2f}x" if r["vs_numpy"] else ""
        lines.append(f"| {r['workload']} | {r['impl']} | {val} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="arrays,small,first,overheads")
    opts = ap.parse_args()
    reps = 5 if opts.quick else 15
    P = peers()
    only = opts.only.split(",")
    print(f"tracejit {tj.__version__}; peers: {', '.join(P) or 'none installed'}; "
          f"{os.cpu_count()} cores", file=sys.stderr)
    if "arrays" in only:
        bench_arrays(W.inputs(), reps, P)
    if "small" in only:
        bench_small_calls(P)
    if "first" in only:
        bench_first_call()
    if "overheads" in only:
        bench_overheads(P)
    print(table())
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.json"), "w") as f:
        json.dump(ROWS, f, indent=1)


if __name__ == "__main__":
    main()
