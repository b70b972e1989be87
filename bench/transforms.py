"""Function transforms (#15's goals): medians and ratios measured in one run, never asserted.

Sections (run all, or name some: `python bench/transforms.py vmap jacfwd hessian`):
- vmap: per-example gradients of an MLP with batch 256, `compile(vmap(grad(loss)))`, against
  the batched gradient (one gradient of the mean loss), a Python loop of per-example compiled
  gradients, and torch.func.vmap(grad) / torch's batched gradient where PyTorch is installed.
  On a shared machine run it with TRACEJIT_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 as well: a
  loaded machine schedules helper threads late, and the split kernels then wait for them.
- jacfwd: the Jacobian of a function from R^8 to R^1000 by forward mode against reverse mode
  (tj.jacrev on vmap, and the row-by-row tj.jacobian), plain and compiled, and torch.func.
- hessian: the Hessian of a scalar function of 100 variables, compiled: tj.hessian (jacfwd of
  jacrev) against the compiled row-by-row reverse mode (jacobian of grad), and torch.func.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np

import tracejit as tj
from tracejit.runtime.llvm_backend import n_threads


def median_ms(fn, reps: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def interleaved_ms(fns: dict, rounds: int = 15, warmup: int = 2) -> dict:
    """Median ms of each function, measured in interleaved rounds (one call of each per
    round), so that a noisy neighbour slows all of them alike and the ratios stay fair."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


# -- vmap: per-example gradients ------------------------------------------------------------------
BATCH, D_IN, HIDDEN, D_OUT = 256, 64, 128, 10


def _mlp_params(rng):
    return (rng.standard_normal((D_IN, HIDDEN)).astype(np.float32) * 0.1,
            np.zeros(HIDDEN, np.float32),
            rng.standard_normal((HIDDEN, D_OUT)).astype(np.float32) * 0.1)


def _loss(params, x, y):
    w1, b1, w2 = params
    h = tj.tanh(x @ w1 + b1)
    return ((h @ w2 - y) ** 2).mean()


def vmap_section() -> dict:
    rng = np.random.default_rng(0)
    params = _mlp_params(rng)
    x = rng.standard_normal((BATCH, D_IN)).astype(np.float32)
    y = rng.standard_normal((BATCH, D_OUT)).astype(np.float32)

    batched = tj.compile(tj.grad(_loss))                  # one gradient of the batch's mean
    per_example = tj.compile(tj.vmap(tj.grad(_loss), in_axes=(None, 0, 0)))
    one = tj.compile(tj.grad(_loss))
    check = per_example(params, x, y)                    # (a): the loop's answers first
    for i in (0, BATCH - 1):
        for got, want in zip(check, one(params, x[i], y[i])):
            assert np.allclose(got.numpy()[i], want.numpy(), rtol=1e-4, atol=1e-6)

    fns = {"tracejit batched grad": lambda: batched(params, x, y),
           "tracejit compile(vmap(grad))": lambda: per_example(params, x, y),
           "tracejit eager vmap(grad)":
               lambda: tj.vmap(tj.grad(_loss), in_axes=(None, 0, 0))(params, x, y),
           "tracejit loop of compiled grads":
               lambda: [one(params, x[i], y[i]) for i in range(BATCH)]}
    torch = _torch()
    if torch is not None:
        from torch.func import grad, vmap
        tp = tuple(torch.tensor(p) for p in params)
        tx, ty = torch.tensor(x), torch.tensor(y)

        def tloss(p, xi, yi):
            w1, b1, w2 = p
            return ((torch.tanh(xi @ w1 + b1) @ w2 - yi) ** 2).mean()
        tper = vmap(grad(tloss), in_dims=(None, 0, 0))
        fns["torch.func vmap(grad)"] = lambda: tper(tp, tx, ty)
        fns["torch.func batched grad"] = lambda: grad(tloss)(tp, tx, ty)
    res = interleaved_ms(fns)
    base = res["tracejit batched grad"]
    print(f"vmap: per-example gradients, MLP {D_IN}-{HIDDEN}-{D_OUT}, batch {BATCH}, float32, "
          f"TRACEJIT_NUM_THREADS={n_threads()}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    for k, v in res.items():
        print(f"  {k:34s} {v:9.3f} ms   {v / base:7.2f}x the batched gradient")
    print(f"  goal: compile(vmap(grad)) <= 1.5x the batched gradient: "
          f"{res['tracejit compile(vmap(grad))'] / base:.2f}x")
    return res


# -- forward mode: jacfwd vs jacrev, hessian ------------------------------------------------------
N_IN, N_OUT, N_H = 8, 1000, 100


def _torch():
    """PyTorch if installed, on as many threads as tracejit's kernels: its idle OpenMP threads
    otherwise spin on the cores tracejit's calls run on (the batched gradient took 2.1-2.9 ms
    instead of 0.38 with torch's default threads in the process)."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(n_threads())
    return torch


def jacfwd_section() -> dict:
    """The Jacobian of f: R^8 -> R^1000, f(x) = tanh(W x + b) * sin(sum x), float64: forward
    mode runs 8 tangents, reverse mode 1000 cotangents (vmap-batched: tj.jacrev; one backward
    per row: tj.jacobian, the reverse mode before #15)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((N_OUT, N_IN)) * 0.3
    b = rng.standard_normal(N_OUT)
    x = rng.standard_normal(N_IN)

    def f(x):
        return tj.tanh(tj.tensor(w) @ x + tj.tensor(b)) * tj.sin(x.sum())
    want = tj.jacobian(f)(x).numpy()
    fns = {
        "tj.jacfwd": tj.jacfwd(f),
        "tj.jacrev (vmap)": tj.jacrev(f),
        "tj.jacobian (row by row)": tj.jacobian(f),
        "compiled tj.jacfwd": tj.compile(tj.jacfwd(f)),
        "compiled tj.jacrev (vmap)": tj.compile(tj.jacrev(f)),
    }
    res = {}
    for name, fn in fns.items():
        assert np.allclose(fn(x).numpy(), want, rtol=1e-10, atol=1e-12), name
        res[name] = median_ms(lambda: fn(x), reps=5 if "row" in name else 20,
                              warmup=1 if "row" in name else 3)
    torch = _torch()
    if torch is not None:
        from torch.func import jacfwd, jacrev
        tw, tb, tx = torch.tensor(w), torch.tensor(b), torch.tensor(x)
        tf = lambda x: torch.tanh(tw @ x + tb) * torch.sin(x.sum())       # noqa: E731
        assert np.allclose(jacfwd(tf)(tx).numpy(), want, rtol=1e-10, atol=1e-12)
        res["torch.func.jacfwd"] = median_ms(lambda: jacfwd(tf)(tx))
        res["torch.func.jacrev"] = median_ms(lambda: jacrev(tf)(tx))
    print(f"jacfwd: Jacobian of R^{N_IN} -> R^{N_OUT}, float64 (ratio: time / tj.jacfwd's)")
    base = res["tj.jacfwd"]
    for k, v in res.items():
        print(f"  {k:34s} {v:9.3f} ms   {v / base:7.2f}x")
    print(f"  goal: jacfwd >= 5x faster than jacrev: {res['tj.jacrev (vmap)'] / base:.1f}x "
          f"(vs the row-by-row reverse mode: {res['tj.jacobian (row by row)'] / base:.1f}x)")
    return res


def hessian_section() -> dict:
    """The Hessian of a scalar function of 100 variables, compiled: tj.hessian (jacfwd of
    jacrev) against the row-by-row reverse mode of before #15 (jacobian of grad), both as one
    compiled function; first-call (trace + compile) times too."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((N_H, N_H)) / np.sqrt(N_H)
    x = rng.standard_normal(N_H)

    def f(x):
        h = tj.tanh(tj.tensor(a) @ x)
        return (h * h).sum() + (x ** 4).sum() * 0.01
    res, first = {}, {}
    fns = {"compiled tj.hessian": tj.compile(tj.hessian(f)),
           "compiled jacobian(grad) (row by row)": tj.compile(tj.jacobian(tj.grad(f)))}
    want = None
    for name, fn in fns.items():
        t0 = time.perf_counter()
        got = fn(x).numpy()
        first[name] = time.perf_counter() - t0
        want = got if want is None else want
        assert np.allclose(got, want, rtol=1e-9, atol=1e-12), name
        res[name] = median_ms(lambda: fn(x))
    res["tj.hessian (eager)"] = median_ms(lambda: tj.hessian(f)(x), reps=5, warmup=1)
    res["eager jacobian(grad) (row by row)"] = median_ms(
        lambda: tj.jacobian(tj.grad(f))(x), reps=3, warmup=1)
    torch = _torch()
    if torch is not None:
        from torch.func import hessian
        ta, tx = torch.tensor(a), torch.tensor(x)

        def tf(x):
            h = torch.tanh(ta @ x)
            return (h * h).sum() + (x ** 4).sum() * 0.01
        assert np.allclose(hessian(tf)(tx).numpy(), want, rtol=1e-9, atol=1e-12)
        res["torch.func.hessian"] = median_ms(lambda: hessian(tf)(tx))
    base = res["compiled tj.hessian"]
    print(f"hessian: scalar function of {N_H} variables, float64 (ratio: time / compiled "
          f"tj.hessian's)")
    for k, v in res.items():
        extra = f"   first call {first[k]:.2f} s" if k in first else ""
        print(f"  {k:38s} {v:9.3f} ms   {v / base:7.2f}x{extra}")
    print(f"  goal: >= 10x faster than the row-by-row reverse mode: "
          f"{res['compiled jacobian(grad) (row by row)'] / base:.1f}x compiled, "
          f"{res['eager jacobian(grad) (row by row)'] / base:.0f}x eager")
    return res


SECTIONS = {"vmap": vmap_section, "jacfwd": jacfwd_section, "hessian": hessian_section}

if __name__ == "__main__":
    for name in (sys.argv[1:] or list(SECTIONS)):
        SECTIONS[name]()
