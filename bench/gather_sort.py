"""Gradients through gather, sort and topk: forward + backward medians, tracejit eager and a
compiled tj.grad against torch eager, ratios within one run (never asserted).

    .venv/bin/python bench/gather_sort.py [--rounds 41] [--shape 64x64]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import tracejit as tj  # noqa: E402


def _median_us(fn, rounds: int) -> float:
    for _ in range(3):
        fn()
    ts = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--shape", default="64x64")
    args = ap.parse_args()
    rows, cols = (int(s) for s in args.shape.split("x"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    idx1 = rng.integers(0, cols, (rows, 8))
    idx0 = rng.integers(0, rows, (8, cols))
    cases = {   # name: f(x, the library)
        "sort dim 1": lambda a, m: m.sort(a, 1)[0],
        "sort dim 0": lambda a, m: m.sort(a, 0)[0],
        "topk 8 dim 1": lambda a, m: m.topk(a, 8, 1)[0],
        "topk 8 dim 0": lambda a, m: m.topk(a, 8, 0)[0],
        "topk 1 dim 1": lambda a, m: m.topk(a, 1, 1)[0],
        "gather dim 1, 8 per row": lambda a, m: m.gather(a, 1, m.tensor(idx1)),
        "gather dim 0, 8 per column": lambda a, m: m.gather(a, 0, m.tensor(idx0)),
    }
    print(f"tracejit {tj.__version__}, torch {torch.__version__}; x f32{[rows, cols]}; "
          f"median of {args.rounds}, forward + backward")
    print("| op | tracejit eager | compiled grad | torch eager | eager vs torch |")
    print("|---|---|---|---|---|")
    for name, f in cases.items():
        def eager(f=f):
            a = tj.tensor(x, requires_grad=True)
            f(a, tj).sum().backward()

        def ref(f=f):
            a = torch.tensor(x, requires_grad=True)
            f(a, torch).sum().backward()
        grad = tj.compile(tj.grad(lambda a, f=f: f(a, tj).sum()))
        xt = tj.tensor(x)
        e, c, r = _median_us(eager, args.rounds), _median_us(lambda: grad(xt), args.rounds), \
            _median_us(ref, args.rounds)
        print(f"| {name} | {e:.0f} us | {c:.0f} us | {r:.0f} us | {e / r:.2f}x |")


if __name__ == "__main__":
    main()
