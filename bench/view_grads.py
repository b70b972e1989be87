"""Eager clip_grad_norm_ + AdamW step on nanoGPT-small (bench/model_defs.py) whose `.grad`s are
views of one flat buffer made fresh each step (as DDP buckets / gradient-as-bucket-view or a
reducer's `flat[a:b].view(shape)` make them), against the same step on plain gradients, and
torch eager doing both. Interleaved rounds, medians of per-step times, ratios from this one run
(the machine is shared: compare ratios, not absolute times).

    python bench/view_grads.py [--rounds 5] [--steps 10]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TRACEJIT_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("bench_model_defs",
                                               os.path.join(_HERE, "model_defs.py"))
model_defs = importlib.util.module_from_spec(_spec)
sys.modules["bench_model_defs"] = model_defs        # dataclasses look their module up
_spec.loader.exec_module(model_defs)

import tracejit as tj  # noqa: E402

try:
    import torch
    torch.set_num_threads(1)
except ImportError:                          # pragma: no cover - the comparison needs torch
    torch = None


def make(lib, views: bool):
    w = model_defs.nanogpt("nanogpt_small", 8, 64, 128, 4, 2)
    model = w.build(lib)
    opt = w.optimizer(lib, model, "cpu")
    params = list(model.parameters())
    rng = np.random.default_rng(0)
    src = [lib.tensor(rng.standard_normal(tuple(p.shape)).astype(np.float32) * 1e-2)
           for p in params]

    def step():
        flat = lib.cat([g.reshape(-1) for g in src])        # a fresh bucket each step
        off = 0
        for p in params:
            n = p.numel()
            g = flat[off:off + n].view(p.shape)
            p.grad = g if views else g.clone()
            off += n
        lib.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    libs = [tj] + ([torch] if torch is not None else [])
    steps = {(lib.__name__, v): make(lib, v) for lib in libs for v in (False, True)}
    for s in steps.values():                # warm up: compile the fused updates
        s(), s()
    times: dict = {k: [] for k in steps}
    for _ in range(a.rounds):
        for k, s in steps.items():
            for _ in range(a.steps):
                t0 = time.perf_counter()
                s()
                times[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    for (lib, v), ms in med.items():
        print(f"{lib:9s} {'view grads' if v else 'plain grads':12s} {ms:8.2f} ms/step")
    print(f"tracejit view/plain: {med[('tracejit', True)] / med[('tracejit', False)]:.2f}x")
    if torch is not None:
        print(f"torch    view/plain: {med[('torch', True)] / med[('torch', False)]:.2f}x")
        print(f"tracejit/torch, view grads: "
              f"{med[('tracejit', True)] / med[('torch', True)]:.2f}x")


if __name__ == "__main__":
    main()
