"""cross_entropy loss + gradient with class-index targets, compiled, on nanoGPT's logits
([batch*block, vocab] with ignore_index=-1): median milliseconds per call, measured in this run.
Run from another checkout (PYTHONPATH=that/checkout) to compare two versions.

    python bench/cross_entropy.py [--reps N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import tracejit as tj

SHAPES = [(16 * 64, 65), (8 * 256, 50304 // 8), (4 * 128, 50304)]   # char vocab, mid, GPT-2


def bench(rows: int, vocab: int, reps: int) -> float:
    rs = np.random.default_rng(0)
    logits = tj.tensor(rs.standard_normal((rows, vocab), dtype=np.float32),
                       requires_grad=True)
    target = rs.integers(0, vocab, rows)
    target[::7] = -1
    t = tj.tensor(target)

    @tj.compile
    def step(t):
        logits.grad = None
        loss = tj.nn.functional.cross_entropy(logits, t, ignore_index=-1)
        loss.backward()
        return loss

    step(t).item()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step(t).item()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    for rows, vocab in SHAPES:
        print(f"cross_entropy loss+grad [{rows}, {vocab}]: {bench(rows, vocab, args.reps):.3f} ms")


if __name__ == "__main__":
    main()
