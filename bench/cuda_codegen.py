"""CUDA code generation of a compiled nanoGPT value-and-grad step at 1, 2, 4 and 8 layers,
measured on any machine (no GPU is needed to generate CUDA C):

  launches    generated kernel launches per step
  functions   CUDA functions in the translation unit (each structural kernel once)
  source KB   the translation unit NVRTC compiles
  render all  lower_program rendering every kernel (TRACEJIT_CHECK_KERNEL_KEYS's mode: what
              the renderer did before kernels of one structural key shared their functions)
  once        lower_program rendering each structural kernel once, in a process whose table
              of rendered kernels is empty
  again       lower_program of the same plan once more: every kernel from the process's table
              (a later program with the same kernels)
  nvrtc       on a machine with a GPU and CuPy: NVRTC compiling the translation unit to a
              CUBIN (wall seconds, an empty cache directory); "-" elsewhere

Process CPU seconds, medians over --repeat runs, each model in its own subprocess (the machine
may be shared: compare ratios within one run). Model: tests/nn/nanogpt_model.py, n_head=4,
n_embd=128, block_size=64, vocab 65, no dropout, batch 8x64 (bench/compile_time.py's).

    python bench/cuda_codegen.py [--repeat 3] [--layers 1,2,4,8] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, os, re, sys, time
import numpy as np
import tracejit as tj
from tracejit.codegen import cuda_program
from tracejit.codegen.fusion import plan as make_plan
from tracejit.runtime.cuda_backend import prepare
sys.path.insert(0, os.path.join(ROOT, "tests"))
from nanogpt_helpers import load_nanogpt, value_and_grad_step
mod = load_nanogpt("tracejit", "bench_cuda_codegen")
cfg = mod.GPTConfig(n_layer=LAYERS, n_head=4, n_embd=128, block_size=64, vocab_size=65,
                    dropout=0.0, bias=True)
tj.manual_seed(0)
model = mod.GPT(cfg)
rng = np.random.default_rng(0)
idx = tj.tensor(rng.integers(0, 65, (8, 64)))
tgt = tj.tensor(rng.integers(0, 65, (8, 64)))
plan = make_plan(prepare(tj.compile(value_and_grad_step(model)).lower(idx, tgt).graph))


def timed(**kw):
    c0 = time.process_time()
    prog = cuda_program.lower_program(plan, **kw)
    return time.process_time() - c0, prog


all_s, _ = timed(check_keys=True)
cuda_program._RENDERED.clear()
once_s, prog = timed(check_keys=False)
again_s, _ = timed(check_keys=False)
nvrtc_s = None
if tj.cuda_available():             # (TRACEJIT_CACHE_DIR: a fresh directory per child)
    import cupy
    from tracejit.runtime.cuda_backend import compile_cubin
    w0 = time.perf_counter()
    compile_cubin(prog.source, str(cupy.cuda.Device().compute_capability))
    nvrtc_s = time.perf_counter() - w0
print(json.dumps(dict(
    launches=sum(ln.kind == "kernel" for ln in prog.launches),
    functions=len(re.findall(r'extern "C" __global__', prog.source)),
    source_kb=len(prog.source) / 1024, all_s=all_s, once_s=once_s, again_s=again_s,
    nvrtc_s=nvrtc_s)))
"""


def child(layers: int) -> dict:
    code = CHILD.replace("ROOT", repr(ROOT)).replace("LAYERS", str(layers))
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, PYTHONPATH=ROOT, TRACEJIT_CACHE_DIR=cache)
        env.pop("TRACEJIT_CHECK_KERNEL_KEYS", None)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--layers", default="1,2,4,8")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = {}
    print(f"{'layers':>6} {'launches':>8} {'functions':>9} {'source KB':>9} {'render all':>10} "
          f"{'once':>8} {'again':>8} {'all/once':>8} {'nvrtc':>8}")
    for n in map(int, args.layers.split(",")):
        runs = [child(n) for _ in range(args.repeat)]
        med = {k: statistics.median(r[k] for r in runs) for k in ("all_s", "once_s", "again_s")}
        if runs[0]["nvrtc_s"] is not None:
            med["nvrtc_s"] = statistics.median(r["nvrtc_s"] for r in runs)
        r = dict(runs[0], **med)
        rows[n] = r
        print(f"{n:>6} {r['launches']:>8} {r['functions']:>9} {r['source_kb']:>9.0f} "
              f"{r['all_s']:>9.3f}s {r['once_s']:>7.3f}s {r['again_s']:>7.3f}s "
              f"{r['all_s'] / max(r['once_s'], 1e-9):>7.2f}x "
              + (f"{r['nvrtc_s']:>7.2f}s" if r["nvrtc_s"] is not None else f"{'-':>8}"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
