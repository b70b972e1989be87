"""Eager mode against torch eager: issue #14's goals table, measured in one run.

  chain     a 60-op chain on 16 floats, forward and backward, time per op+node (1 thread)
  models    nanoGPT-small (B=8 T=64 C=128, 2 layers), makemore MLP, LSTM (20 unrolled steps):
            one eager forward+backward step each, 1 thread
  ew        the elementwise chain tanh(x*a+b)*sigmoid(x)+0.5*x*x on 4M float32, eager, 2 threads
  rss       peak RSS of one eager nanoGPT step (B=16 T=128 C=256, 4 layers), each library in a
            fresh process (--rss to include it: it takes a while)
  fused     eager composites (softmax, layer_norm, gelu, cross_entropy, attention) fwd+bwd per
            call: interpreted plan, compiled plan, torch eager; and a plan's first (compiling)
            call (--only fused)
  crossover, crossover1
            per op and size, the eager time through the compiled kernel over NumPy's, at 2 and
            at 1 thread, and each op's crossover (runtime/eager_kernels.CROSSOVER records them)

Each section runs in its own process (thread counts are fixed before numpy/torch load), and
tracejit and torch alternate inside it, so load from other tenants falls on both. Figures are
medians; compare the ratios.

    python bench/eager.py [--rss] [--rounds N] [--only chain,models,ew,fused]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:            # run as a script from anywhere (PYTHONPATH still wins)
    sys.path.append(ROOT)
THREADS = {"chain": 1, "models": 1, "ew": 2, "rss": 1, "crossover": 2, "crossover1": 1,
           "fused": 1}


def _set_threads(n: int) -> None:
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "TRACEJIT_NUM_THREADS"):
        os.environ[v] = str(n)


def _median_ms(fn, rounds: int, inner: int = 1) -> float:
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        ts.append((time.perf_counter() - t0) * 1e3 / inner)
    ts.sort()
    return ts[len(ts) // 2]


def _pair(tj_fn, torch_fn, rounds: int, inner: int = 1) -> tuple[float, float]:
    """Medians of tj_fn and torch_fn, interleaved round by round."""
    tj_fn(), torch_fn()                   # warm
    if os.environ.get("BENCH_GC_FREEZE") == "1":
        # an experiment (--gc-freeze): what the cycle collector's full passes over every object
        # alive (torch's and numpy's included) cost each side
        import gc
        gc.collect()
        gc.freeze()
    a, b = [], []
    for _ in range(rounds):
        a.append(_median_ms(tj_fn, 1, inner))
        b.append(_median_ms(torch_fn, 1, inner))
    a.sort(), b.sort()
    return a[len(a) // 2], b[len(b) // 2]


# -- chain --------------------------------------------------------------------------------------
N_OPS = 60


def _chain(lib, x):
    y = x
    for i in range(N_OPS // 6):       # six ops per round: mul, add, sin, tanh, exp-free sub, mul
        y = y * 1.01
        y = y + x
        y = lib.sin(y)
        y = lib.tanh(y)
        y = y - 0.5
        y = y * x
    return y


def section_chain(rounds: int) -> dict:
    import numpy as np
    import torch

    import tracejit as tj
    v = np.linspace(-1, 1, 16, dtype=np.float32)

    def run_tj():
        x = tj.tensor(v, requires_grad=True)
        _chain(tj, x).sum().backward()

    def run_torch():
        x = torch.tensor(v, requires_grad=True)
        _chain(torch, x).sum().backward()
    a, b = _pair(run_tj, run_torch, rounds, inner=20)
    # per op+node: 60 ops plus the sum, forward and backward
    n = N_OPS + 1
    return {"chain_us_per_op_tj": a * 1e3 / n, "chain_us_per_op_torch": b * 1e3 / n,
            "chain_ratio": a / b}


# -- models -------------------------------------------------------------------------------------
def _load_test_module(rel: str, name: str):
    import importlib.util
    tests = os.path.join(ROOT, "tests")
    sys.path[:] = [tests] + [p for p in sys.path if p not in (tests, os.path.dirname(__file__))]
    mods = sys.modules.get("models")
    if mods is not None and not (getattr(mods, "__file__", None) or "").startswith(tests):
        del sys.modules["models"]          # bench/models.py, not the tests' models package
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tests", rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _loss_step(model, lib, F, p_np, d_np, dtype_tensor):
    """A function running one forward+backward of a tests/models loss with lib's tensors."""
    def step():
        p = {k: dtype_tensor(v, True) for k, v in p_np.items()}
        d = {k: dtype_tensor(v, False) for k, v in d_np.items()}
        model.loss(lib, F, p, d).backward()
    return step


def section_models(rounds: int) -> dict:
    import numpy as np
    import torch

    import tracejit as tj
    torch.set_num_threads(1)
    out = {}

    # nanoGPT-small, as bench/train_step.py: B=8 T=64 C=128, 2 layers, float32
    helpers = _load_test_module("nanogpt_helpers.py", "nanogpt_helpers")
    cfg = dict(n_layer=2, n_head=4, n_embd=128, block_size=64, vocab_size=65, dropout=0.0,
               bias=True)
    tm, m = helpers.torch_twin("bench_eager", **cfg)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 65, (8, 64))
    tgt = rng.integers(0, 65, (8, 64))

    def gpt_tj():
        m.zero_grad()
        _, loss = m(tj.tensor(idx), tj.tensor(tgt))
        loss.backward()

    def gpt_torch():
        tm.zero_grad()
        _, loss = tm(torch.tensor(idx), torch.tensor(tgt))
        loss.backward()
    try:                                  # one model failing does not hide the others
        a, b = _pair(gpt_tj, gpt_torch, rounds)
        out.update(nanogpt_ms_tj=a, nanogpt_ms_torch=b, nanogpt_ratio=a / b)
    except Exception as e:                # noqa: BLE001 - reported, then the next model
        print(f"[models] nanoGPT failed: {type(e).__name__}: {e}", file=sys.stderr)

    for rel, name, tweak in (("models/test_makemore_mlp.py", "makemore", None),
                             ("models/test_lstm.py", "lstm", ("STEPS", 20))):
        mod = _load_test_module(rel, "bench_" + name)
        if tweak:
            setattr(mod, *tweak)
        rng = np.random.default_rng(0)
        p = {k: v.astype(np.float32) for k, v in mod.params(rng).items()}
        d = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v)
             for k, v in mod.data(rng).items()}
        tj_step = _loss_step(mod.MODEL, tj, tj, p, d,
                             lambda v, g: tj.tensor(v, requires_grad=g))
        torch_step = _loss_step(mod.MODEL, torch, torch.nn.functional, p, d,
                                lambda v, g: torch.tensor(v, requires_grad=g))
        try:
            a, b = _pair(tj_step, torch_step, rounds, inner=5)
            out.update({f"{name}_ms_tj": a, f"{name}_ms_torch": b, f"{name}_ratio": a / b})
        except Exception as e:            # noqa: BLE001
            print(f"[models] {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
    return out


# -- 4M-float elementwise chain -----------------------------------------------------------------
def section_ew(rounds: int) -> dict:
    import numpy as np
    import torch

    import tracejit as tj
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    n = 4 * 1024 * 1024
    xs = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    tx, ta, tb = (tj.tensor(v) for v in xs)
    qx, qa, qb = (torch.tensor(v) for v in xs)

    def run_tj():
        return tj.tanh(tx * ta + tb) * tj.sigmoid(tx) + 0.5 * tx * tx

    def run_torch():
        return torch.tanh(qx * qa + qb) * torch.sigmoid(qx) + 0.5 * qx * qx

    def run_np():
        x, a, b = xs
        return np.tanh(x * a + b) * (1 / (1 + np.exp(-x))) + 0.5 * x * x
    np.testing.assert_allclose(run_tj().numpy(), run_torch().numpy(), rtol=1e-4, atol=1e-5)
    a, b = _pair(run_tj, run_torch, rounds)
    c = _median_ms(run_np, rounds)
    return {"ew_ms_tj": a, "ew_ms_torch": b, "ew_ms_numpy": c, "ew_ratio": a / b}


# -- crossover of the large-tensor kernel path --------------------------------------------------
CROSS_SIZES = (12, 14, 15, 16, 17, 18, 19, 20, 22)      # log2 of the operand size


def _cross_ops():
    import tracejit as tj
    from tracejit.ir.primitives import P, bind
    return {
        "add": lambda a, b, m: a + b, "sub": lambda a, b, m: a - b, "mul": lambda a, b, m: a * b,
        "div": lambda a, b, m: a / b, "neg": lambda a, b, m: -a, "abs": lambda a, b, m: abs(a),
        "maximum": lambda a, b, m: tj.maximum(a, b), "minimum": lambda a, b, m: tj.minimum(a, b),
        "lt": lambda a, b, m: a < b, "le": lambda a, b, m: a <= b, "gt": lambda a, b, m: a > b,
        "ge": lambda a, b, m: a >= b, "eq": lambda a, b, m: a == b, "ne": lambda a, b, m: a != b,
        "where": lambda a, b, m: tj.where(m, a, b), "exp": lambda a, b, m: tj.exp(a),
        "cast": lambda a, b, m: a.double(), "reciprocal": lambda a, b, m: bind(P.reciprocal, b),
        "sqrt": lambda a, b, m: tj.sqrt(b), "max": lambda a, b, m: a.amax(-1),
        "min": lambda a, b, m: a.amin(-1)}


def section_crossover(rounds: int) -> dict:
    """Per op and size: eager time with the compiled-kernel path / with NumPy, at the thread
    count the section runs with (crossover1: 1 thread, crossover: 2). Each side's time is the
    minimum over interleaved rounds, not the median: the crossover is a property of the
    machine, and on a shared machine the minimum is the figure least disturbed by other
    tenants. `crossover_<op>` is the smallest size from which the kernel was faster at every
    larger size measured (0: never), the figure runtime/eager_kernels.CROSSOVER records."""
    import numpy as np

    import tracejit as tj
    from tracejit.runtime import eager_kernels as ek
    rng = np.random.default_rng(0)
    out = {}
    old_min = ek.MIN_ELEMENTS
    ek.MIN_ELEMENTS = 0
    try:
        ratios = {}
        for logn in CROSS_SIZES:
            n = 1 << logn
            a = tj.tensor(rng.standard_normal((n // 256, 256)).astype(np.float32))
            b = tj.tensor(rng.random((n // 256, 256)).astype(np.float32) + 0.5)
            m = a > 0
            inner = max(1, (1 << 20) // n)
            for name, f in _cross_ops().items():
                def run(on, f=f):
                    ek.enable(on)
                    t0 = time.perf_counter()
                    for _ in range(inner):
                        f(a, b, m)
                    return (time.perf_counter() - t0) / inner
                run(True), run(False)             # compile, warm
                k = min(run(True) for _ in range(rounds))
                mm = min(run(False) for _ in range(rounds))
                ratios[(name, logn)] = k / mm
                out[f"x_{name}_2^{logn}"] = k / mm
        for name in _cross_ops():
            cross = 0
            for logn in reversed(CROSS_SIZES):
                if ratios[(name, logn)] >= 0.95:  # not clearly faster
                    break
                cross = 1 << logn
            out[f"crossover_{name}"] = cross
    finally:
        ek.MIN_ELEMENTS = old_min
        ek.enable(True)
    return out


# -- fused composites ---------------------------------------------------------------------------
def section_fused(rounds: int) -> dict:
    """Eager composites (tracer/fused.py), forward+backward per call, 1 thread: the plan
    interpreted on arrays, compiled, and torch eager; and the time to compile one plan (its
    forward and backward graphs; in a warm disk cache this is mostly loading)."""
    import numpy as np
    import torch

    import tracejit as tj
    import tracejit.nn.functional as F
    from tracejit.tracer import fused
    torch.set_num_threads(1)
    tgt = np.arange(512) % 65
    cases = [
        ("sigmoid_4x8", (4, 8), tj.sigmoid, torch.sigmoid),
        ("layer_norm_4x8", (4, 8), lambda x: F.layer_norm(x, (8,)),
         lambda x: torch.nn.functional.layer_norm(x, (8,))),
        ("softmax_4x8", (4, 8), lambda x: F.softmax(x, -1), lambda x: torch.softmax(x, -1)),
        ("layer_norm_8x64x128", (8, 64, 128), lambda x: F.layer_norm(x, (128,)),
         lambda x: torch.nn.functional.layer_norm(x, (128,))),
        ("gelu_8x64x512", (8, 64, 512), F.gelu, torch.nn.functional.gelu),
        ("softmax_8x4x64x64", (8, 4, 64, 64), lambda x: F.softmax(x, -1),
         lambda x: torch.softmax(x, -1)),
        ("cross_entropy_512x65", (512, 65), lambda x: F.cross_entropy(x, tj.tensor(tgt)),
         lambda x: torch.nn.functional.cross_entropy(x, torch.tensor(tgt))),
        ("sdpa_8x4x64x32", (8, 4, 64, 32),
         lambda x: F.scaled_dot_product_attention(x, x, x, is_causal=True),
         lambda x: torch.nn.functional.scaled_dot_product_attention(x, x, x, is_causal=True)),
    ]
    rng = np.random.default_rng(0)
    out = {}
    old = fused.COMPILE_AFTER
    try:
        for name, shape, f, tf in cases:
            xa = rng.standard_normal(shape).astype(np.float32)
            g = rng.standard_normal(tuple(tf(torch.tensor(xa)).shape)).astype(np.float32)

            def run_tj():
                x = tj.tensor(xa, requires_grad=True)
                f(x).backward(tj.tensor(g))

            def run_torch():
                x = torch.tensor(xa, requires_grad=True)
                tf(x).backward(torch.tensor(g))
            fused.COMPILE_AFTER = 0           # interpreted only
            fused.clear()
            interp, torch_ms = _pair(run_tj, run_torch, rounds, inner=3)
            fused.COMPILE_AFTER = 1           # compiled on the first call: time it
            fused.clear()
            t0 = time.perf_counter()
            run_tj()
            first = (time.perf_counter() - t0) * 1e3
            comp, torch_ms2 = _pair(run_tj, run_torch, rounds, inner=3)
            out.update({f"fused_{name}_interp_ms": interp, f"fused_{name}_compiled_ms": comp,
                        f"fused_{name}_torch_ms": torch_ms2,
                        f"fused_{name}_first_compiled_call_ms": first,
                        f"fused_{name}_compiled_ratio": comp / torch_ms2,
                        f"fused_{name}_interp_ratio": interp / torch_ms})
    finally:
        fused.COMPILE_AFTER = old
        fused.clear()
    return out


# -- peak RSS -----------------------------------------------------------------------------------
def section_rss_one(lib: str) -> dict:
    import resource

    import numpy as np
    helpers = _load_test_module("nanogpt_helpers.py", "nanogpt_helpers")
    cfg = dict(n_layer=4, n_head=4, n_embd=256, block_size=128, vocab_size=65, dropout=0.0,
               bias=True)
    rng = np.random.default_rng(0)
    idx, tgt = rng.integers(0, 65, (16, 128)), rng.integers(0, 65, (16, 128))
    if lib == "torch":
        import torch
        torch.set_num_threads(1)
        mod = helpers.load_nanogpt("torch", "rss")
        torch.manual_seed(0)
        m = mod.GPT(mod.GPTConfig(**cfg))
        conv = torch.tensor
    else:
        import tracejit as tj
        mod = helpers.load_nanogpt("tracejit", "rss")
        m = mod.GPT(mod.GPTConfig(**cfg))
        conv = tj.tensor
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in range(2):
        m.zero_grad()
        _, loss = m(conv(idx), conv(tgt))
        loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {f"rss_peak_mib_{lib}": peak, f"rss_before_mib_{lib}": before}


def _child(section: str, rounds: int) -> dict:
    env = dict(os.environ)
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "TRACEJIT_NUM_THREADS"):
        env[v] = str(THREADS.get(section.split(":")[0], 1))
    r = subprocess.run([sys.executable, __file__, "--child", section, "--rounds", str(rounds)],
                       env=env, capture_output=True, text=True)
    if r.stderr and r.returncode == 0:
        print(r.stderr[-2000:], file=sys.stderr)
    if r.returncode != 0:
        print(f"[{section}] failed:\n{r.stderr[-3000:]}", file=sys.stderr)
        return {}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--only", default="chain,models,ew")
    ap.add_argument("--rss", action="store_true")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="gc.freeze() before timing (an experiment: the collector's share)")
    ap.add_argument("--child")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.child:
        _set_threads(THREADS.get(args.child.split(":")[0], 1))
        sec, _, lib = args.child.partition(":")
        if sec == "crossover1":          # the same section at 1 thread
            sec = "crossover"
        res = section_rss_one(lib) if sec == "rss" else globals()["section_" + sec](args.rounds)
        if args.child == "crossover1":
            res = {k.replace("x_", "x1_", 1).replace("crossover_", "crossover1_", 1): v
                   for k, v in res.items()}
        print(json.dumps(res))
        return
    res = {}
    if args.gc_freeze:
        os.environ["BENCH_GC_FREEZE"] = "1"
    for sec in args.only.split(","):
        res.update(_child(sec, args.rounds))
    if args.rss:
        res.update(_child("rss:tracejit", 1))
        res.update(_child("rss:torch", 1))
        if "rss_peak_mib_tracejit" in res and "rss_peak_mib_torch" in res:
            res["rss_ratio"] = res["rss_peak_mib_tracejit"] / res["rss_peak_mib_torch"]
    goals = [("60-op chain, per op+node", "chain_ratio", 1.5),
             ("nanoGPT-small eager step, 1 thread", "nanogpt_ratio", 1.5),
             ("makemore MLP eager step, 1 thread", "makemore_ratio", 1.5),
             ("LSTM (20 steps) eager step, 1 thread", "lstm_ratio", 1.5),
             ("4M-float elementwise chain, 2 threads", "ew_ratio", 1.0),
             ("peak RSS, eager nanoGPT step", "rss_ratio", 1.2)]
    for k, v in sorted(res.items()):
        print(f"{k:28s} {v:10.3f}")
    print("\ngoal (tracejit / torch eager)            ratio   goal   met")
    for label, key, goal in goals:
        if key in res:
            print(f"{label:40s} {res[key]:6.2f}  <={goal:<4} {'yes' if res[key] <= goal else 'no'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
