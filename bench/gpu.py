"""GPU benchmarks: W1-W4 through tracejit's CUDA backend against CuPy eager (the NumPy
workloads run on CuPy arrays) and, where PyTorch has CUDA, torch eager and torch.compile. Each
figure is a median with the device synchronized after every call; W1/W2 (and W1 with float16
and bfloat16 storage) are also given as GB/s against the device's measured copy bandwidth. Needs CuPy and an NVIDIA GPU; elsewhere it
says so and exits.

    python bench/gpu.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as R  # noqa: E402
import workloads as W  # noqa: E402

import tracejit as tj  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    reps = 10 if ap.parse_args().quick else 50
    if not tj.cuda_available():
        print("no CUDA device (or no CuPy) here: nothing to measure", file=sys.stderr)
        return
    import cupy as cp
    sync = cp.cuda.Device().synchronize
    args = W.inputs()
    cu = {k: [cp.asarray(a) for a in v] for k, v in args.items()}
    tt = {k: [tj.tensor(a, device="cuda") for a in v] for k, v in args.items()}

    src = cp.empty(1 << 28, cp.uint8)
    dst = cp.empty_like(src)
    copy_ms = R.median_ms(lambda: cp.copyto(dst, src), reps, sync=sync)
    copy_gbs = 2 * src.nbytes / copy_ms / 1e6
    R.row("device copy (256 MiB)", "cupy.copyto", copy_ms, None)

    def gbs(name: str, nbytes: int) -> None:
        ms = R.ROWS[-1]["value"]
        print(f"{name}: {nbytes / ms / 1e6:.0f} GB/s = {nbytes / ms / 1e6 / copy_gbs:.0%} of the "
              f"{copy_gbs:.0f} GB/s copy bandwidth", file=sys.stderr)

    n1 = args["w1"][0].nbytes
    base = R.median_ms(lambda: W.w1_np(*cu["w1"]), reps, sync=sync)
    R.row("W1 elementwise fwd", "cupy eager", base, base)
    f1 = tj.compile(W.w1)
    R.row("W1 elementwise fwd", "tracejit cuda", R.median_ms(lambda: f1(*tt["w1"]), reps,
                                                             sync=sync), base)
    gbs("W1", 4 * n1)
    base2 = R.median_ms(lambda: W.w2_np(*cu["w1"]), reps, sync=sync)
    R.row("W2 grad of sum(W1)", "cupy by hand", base2, base2)
    g2 = tj.grad(tj.compile(W.w2_loss), argnums=(0, 1, 2))
    R.row("W2 grad of sum(W1)", "tracejit cuda", R.median_ms(lambda: g2(*tt["w1"]), reps,
                                                             sync=sync), base2)
    gbs("W2", 6 * n1)
    for half in (tj.float16, tj.bfloat16):      # 16-bit storage: half the bytes to move
        try:
            th = [t.to(half) for t in tt["w1"]]
        except Exception as e:                  # bfloat16 needs CuPy 14 with ml_dtypes
            print(f"W1 in {half}: skipped ({e})", file=sys.stderr)
            continue
        fh = tj.compile(W.w1)
        R.row(f"W1 elementwise fwd, {half}", "tracejit cuda",
              R.median_ms(lambda: fh(*th), reps, sync=sync), base)
        gbs(f"W1 {half}", 2 * n1)
    base3 = R.median_ms(lambda: W.w3_np(*cu["w3"]), reps, sync=sync)
    R.row("W3 MLP step grads", "cupy by hand", base3, base3)
    R.row("W3 MLP step grads", "its 5 GEMMs (cuBLAS)",
          R.median_ms(lambda: W.w3_gemms(*cu["w3"]), reps, sync=sync), base3)
    g3 = tj.grad(tj.compile(W.w3_loss), argnums=(0, 1, 2, 3))
    R.row("W3 MLP step grads", "tracejit cuda", R.median_ms(lambda: g3(*tt["w3"]), reps,
                                                            sync=sync), base3)
    base4 = R.median_ms(lambda: W.w4_np(*cu["w4"]), reps, sync=sync)
    R.row("W4 layer_norm+logsumexp grad", "cupy by hand", base4, base4)
    g4 = tj.grad(tj.compile(W.w4_loss))
    R.row("W4 layer_norm+logsumexp grad", "tracejit cuda",
          R.median_ms(lambda: g4(*tt["w4"]), reps, sync=sync), base4)
    try:
        import torch
        if torch.cuda.is_available():
            R.bench_torch(torch, args, reps, (base, base2, base3, base4), device="cuda",
                          sync=torch.cuda.synchronize)
    except ImportError:
        pass
    print(R.table().replace("vs numpy", "vs cupy"))


if __name__ == "__main__":
    main()
