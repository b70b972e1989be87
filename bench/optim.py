"""Optimizer step time: tracejit's fused compiled step (one compiled update for all parameters)
against a plain per-parameter loop of tracejit eager in-place ops doing the same math, and,
where installed, torch.optim's single-tensor (foreach=False) and foreach steps. Ratios are
measured in one run; the machine is shared, so compare them, not the absolute times.

    python bench/optim.py [--params 20] [--size 256] [--reps 30]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402

import tracejit as tj  # noqa: E402


def show(workload: str, impl: str, ms: float, fused: float | None) -> None:
    ratio = f"   {ms / fused:5.2f}x the fused step's time" if fused else ""
    print(f"{workload:10s} {impl:24s} {ms:8.3f} ms{ratio}")


def eager_adam(params, states, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    """Adam written as a user would without a fused step: per parameter, eager in-place ops."""
    with tj.no_grad():
        for p, (m, v, step) in zip(params, states):
            step[0] += 1
            g = p.grad
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).add_(g * g, alpha=1 - b2)
            bc1, bc2 = 1 - b1 ** step[0], (1 - b2 ** step[0]) ** 0.5
            p.sub_(m / (tj.sqrt(v) / bc2 + eps), alpha=lr / bc1)


def eager_sgd(params, bufs, lr=1e-3, momentum=0.9):
    with tj.no_grad():
        for p, b in zip(params, bufs):
            b.mul_(momentum).add_(p.grad)
            p.sub_(b, alpha=lr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=int, default=20)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--reps", type=int, default=30)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    init = [rng.standard_normal((a.size, a.size)).astype(np.float32) for _ in range(a.params)]
    grads = [rng.standard_normal((a.size, a.size)).astype(np.float32) for _ in range(a.params)]

    def tj_params():
        ps = [tj.tensor(x, requires_grad=True) for x in init]
        for p, g in zip(ps, grads):
            p.grad = tj.tensor(g)
        return ps

    print(f"{a.params} float32 parameters of {a.size}x{a.size}; median ms per step")
    for name in ("Adam", "SGD"):
        ps = tj_params()
        kw = {"momentum": 0.9} if name == "SGD" else {}
        opt = getattr(tj.optim, name)(ps, lr=1e-3, **kw)
        fused = R.median_ms(opt.step, a.reps)
        show(f"{name} step", "tracejit fused", fused, None)
        ps = tj_params()
        if name == "Adam":
            states = [(tj.zeros_like(p), tj.zeros_like(p), [0]) for p in ps]
            loop = R.median_ms(lambda: eager_adam(ps, states), a.reps)
        else:
            bufs = [tj.zeros_like(p) for p in ps]
            loop = R.median_ms(lambda: eager_sgd(ps, bufs), a.reps)
        show(f"{name} step", "tracejit eager loop", loop, fused)
        try:
            import torch
        except ImportError:
            continue
        torch.set_num_threads(os.cpu_count() or 1)
        for foreach in (False, True):
            tps = [torch.tensor(x, requires_grad=True) for x in init]
            for p, g in zip(tps, grads):
                p.grad = torch.tensor(g)
            topt = getattr(torch.optim, name)(tps, lr=1e-3, foreach=foreach, **kw)
            ms = R.median_ms(topt.step, a.reps)
            show(f"{name} step", f"torch foreach={foreach}", ms, fused)


if __name__ == "__main__":
    main()
