"""Function transforms (#15's goals): medians and ratios measured in one run, never asserted.

Sections (run all, or name some: `python bench/transforms.py vmap`):
- vmap: per-example gradients of an MLP with batch 256, `compile(vmap(grad(loss)))`, against
  the batched gradient (one gradient of the mean loss), a Python loop of per-example compiled
  gradients, and torch.func.vmap(grad) / torch's batched gradient where PyTorch is installed.
"""
from __future__ import annotations

import statistics
import sys
import time

import numpy as np

import tracejit as tj


def median_ms(fn, reps: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


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
    res = {}

    batched = tj.compile(tj.grad(_loss))                  # one gradient of the batch's mean
    per_example = tj.compile(tj.vmap(tj.grad(_loss), in_axes=(None, 0, 0)))
    one = tj.compile(tj.grad(_loss))
    check = per_example(params, x, y)                    # (a): the loop's answers first
    for i in (0, BATCH - 1):
        for got, want in zip(check, one(params, x[i], y[i])):
            assert np.allclose(got.numpy()[i], want.numpy(), rtol=1e-4, atol=1e-6)

    res["tracejit batched grad"] = median_ms(lambda: batched(params, x, y))
    res["tracejit compile(vmap(grad))"] = median_ms(lambda: per_example(params, x, y))
    res["tracejit eager vmap(grad)"] = median_ms(
        lambda: tj.vmap(tj.grad(_loss), in_axes=(None, 0, 0))(params, x, y), reps=5)
    res["tracejit loop of compiled grads"] = median_ms(
        lambda: [one(params, x[i], y[i]) for i in range(BATCH)], reps=3, warmup=1)
    try:
        import torch
        from torch.func import grad, vmap
    except ImportError:
        torch = None
    if torch is not None:
        tp = tuple(torch.tensor(p) for p in params)
        tx, ty = torch.tensor(x), torch.tensor(y)

        def tloss(p, xi, yi):
            w1, b1, w2 = p
            return ((torch.tanh(xi @ w1 + b1) @ w2 - yi) ** 2).mean()
        tper = vmap(grad(tloss), in_dims=(None, 0, 0))
        res["torch.func vmap(grad)"] = median_ms(lambda: tper(tp, tx, ty))
        res["torch batched grad"] = median_ms(lambda: grad(tloss)(tp, tx, ty))
    base = res["tracejit batched grad"]
    print(f"vmap: per-example gradients, MLP {D_IN}-{HIDDEN}-{D_OUT}, batch {BATCH}, float32")
    for k, v in res.items():
        print(f"  {k:34s} {v:9.3f} ms   {v / base:7.2f}x the batched gradient")
    return res


SECTIONS = {"vmap": vmap_section}

if __name__ == "__main__":
    for name in (sys.argv[1:] or list(SECTIONS)):
        SECTIONS[name]()
