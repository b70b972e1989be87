"""First-call (compile) time of a compiled nanoGPT value-and-grad step on the CPU, one thread:

  cold       a new process, a fresh empty TRACEJIT_CACHE_DIR: trace, fuse, lower, LLVM
  warm disk  a new process, the cache directory the cold run filled: no LLVM compile
  depth      cold first calls of 1-, 2-, 4- and 8-layer models: compile cost should grow with
             the number of distinct kernels, not with depth

With --phases, each cold run also reports where its first call went, in CPU seconds of the
process (LLVM's compile threads included): tracing, the graph passes, matmul folding, the fusion
plan, build_program (keys, rendering, memory plan), LLVM, and the first run itself; and each
warm-disk run: tracing, the executable's disk-cache key (hashing the traced graph), loading
the kernels' objects, and the first run.

--step adamw compiles the whole training step of bench/models.py instead (forward, loss,
backward, AdamW with nanoGPT's configure_optimizers, zero_grad) as one graph; the default
(--step vg) returns the loss and the gradients.

Model: tests/nn/nanogpt_model.py, n_head=4, n_embd=128, block_size=64, vocab 65, no dropout,
batch 8x64; the step is `loss.backward()` inside tj.compile, returning the loss and every
parameter's gradient (one graph). Each measurement runs in its own subprocess; figures are
medians over --repeat runs (the machine may be shared: compare ratios from one run). Also
printed: kernel calls per step, distinct kernel modules, and how many were compiled / loaded.

    python bench/compile_time.py [--repeat 3] [--layers 1,2,4,8] [--phases] [--step vg|adamw]
                                 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import os, re, sys, time, json
t0 = time.perf_counter()
import numpy as np
import tracejit as tj
from tracejit.runtime import llvm_jit
sys.path.insert(0, os.path.join(ROOT, "tests"))
from nanogpt_helpers import load_nanogpt, value_and_grad_step
t_import = time.perf_counter() - t0
phases = {}
if PHASES:
    from tracejit.runtime import compile as cm, exe_cache, llvm_backend as lb

    def timed(owner, name, label):
        fn = getattr(owner, name)

        def wrapper(*a, **k):
            c0 = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                phases[label] = phases.get(label, 0.0) + time.process_time() - c0
        setattr(owner, name, wrapper)
    for owner, name, label in [(cm.CompiledFunction, "_trace", "trace"),
                               (cm, "_standard_passes", "passes"),
                               (lb, "fold_matmuls", "fold"), (lb, "make_plan", "plan"),
                               (lb, "build_program", "build"), (llvm_jit, "jit_kernels", "llvm"),
                               (lb.LLVMExecutable, "run", "run"), (exe_cache, "key", "key"),
                               (llvm_jit, "load_kernels", "load")]:
        timed(owner, name, label)
mod = load_nanogpt("tracejit", "bench_compile")
cfg = mod.GPTConfig(n_layer=LAYERS, n_head=4, n_embd=128, block_size=64, vocab_size=65,
                    dropout=0.0, bias=True)
tj.manual_seed(0)
model = mod.GPT(cfg)
if STEP == "adamw":
    opt = model.configure_optimizers(0.1, 3e-4, (0.9, 0.95), "cpu")

    def train_step(idx, tgt):
        _, loss = model(idx, tgt)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss, []
    step = tj.compile(train_step)
else:
    step = tj.compile(value_and_grad_step(model))
rng = np.random.default_rng(0)
idx = tj.tensor(rng.integers(0, 65, (8, 64)))
tgt = tj.tensor(rng.integers(0, 65, (8, 64)))
c0, w0 = time.process_time(), time.perf_counter()
loss, grads = step(idx, tgt)
first, first_cpu = time.perf_counter() - w0, time.process_time() - c0
first_phases = dict(phases)         # (the calls below add to phases)
w0 = time.perf_counter()
step(idx, tgt)
second = time.perf_counter() - w0
prog = step.lower(idx, tgt).program
calls, distinct = map(int, re.search(r"(\d+) kernel calls of (\d+) distinct", prog).groups())
print(json.dumps(dict(import_s=t_import, first_s=first, first_cpu_s=first_cpu, second_s=second,
                      loss=float(loss.item()), calls=calls, distinct=distinct,
                      counts=llvm_jit.kernel_counts(), phases=first_phases)))
"""


PHASES = ("trace", "passes", "fold", "plan", "build", "llvm", "run")
DISK_PHASES = ("trace", "key", "load", "run")


def run_child(layers: int, cache_dir: str, phases: bool = False, step: str = "vg") -> dict:
    env = dict(os.environ, TRACEJIT_CACHE_DIR=cache_dir, PYTHONPATH=ROOT,
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TRACEJIT_NUM_THREADS="1")
    code = f"ROOT = {ROOT!r}\nLAYERS = {layers}\nPHASES = {phases}\nSTEP = {step!r}\n" + CHILD
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=ROOT, timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--layers", default="1,2,4,8")
    ap.add_argument("--phases", action="store_true",
                    help="also time each phase of the cold first calls (CPU s)")
    ap.add_argument("--step", choices=("vg", "adamw"), default="vg",
                    help="vg: value and gradients (default); adamw: the whole AdamW step")
    ap.add_argument("--json")
    args = ap.parse_args()
    depths = [int(x) for x in args.layers.split(",")]
    tmp = tempfile.mkdtemp(prefix="tj_bench_compile_")
    runs: dict[str, list[dict]] = {}
    try:
        # interleaved rounds: load from other processes falls on every configuration alike
        for r in range(args.repeat):
            for n in depths:
                d = os.path.join(tmp, f"L{n}_{r}")
                runs.setdefault(f"cold L={n}", []).append(run_child(n, d, args.phases,
                                                                    args.step))
                if n == 2:
                    runs.setdefault("warm disk L=2", []).append(run_child(n, d, args.phases,
                                                                          args.step))
                shutil.rmtree(d, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: {f: statistics.median(r[f] for r in v)
               for f in ("first_s", "first_cpu_s", "second_s", "import_s")}
           for k, v in runs.items()}
    what = "AdamW training step" if args.step == "adamw" else "value-and-grad step"
    print(f"nanoGPT {what}, C=128, 4 heads, B8 T64, 1 thread; medians of {args.repeat}")
    print(f"{'run':<16}{'first call s':>14}{'(cpu s)':>10}{'2nd call ms':>13}{'import s':>10}"
          f"{'calls':>7}{'distinct':>10}{'compiled':>10}{'loaded':>8}")
    for k, v in runs.items():
        last = v[-1]
        print(f"{k:<16}{med[k]['first_s']:>14.3f}{med[k]['first_cpu_s']:>10.3f}"
              f"{med[k]['second_s'] * 1e3:>13.1f}{med[k]['import_s']:>10.2f}{last['calls']:>7}"
              f"{last['distinct']:>10}{last['counts']['compiled']:>10}"
              f"{last['counts']['loaded']:>8}")
    if args.phases:
        print(f"\ncold first call by phase, CPU s (medians; 'other': the rest of the call)")
        print(f"{'run':<16}" + "".join(f"{p:>8}" for p in PHASES + ("other",)))
        for k, v in runs.items():
            if not k.startswith("cold"):
                continue
            ph = {p: statistics.median(r["phases"].get(p, 0.0) for r in v) for p in PHASES}
            other = med[k]["first_cpu_s"] - sum(ph.values())
            print(f"{k:<16}" + "".join(f"{ph[p]:>8.3f}" for p in PHASES) + f"{other:>8.3f}")
        if "warm disk L=2" in runs:
            v = runs["warm disk L=2"]
            ph = {p: statistics.median(r["phases"].get(p, 0.0) for r in v) for p in DISK_PHASES}
            other = med["warm disk L=2"]["first_cpu_s"] - sum(ph.values())
            print(f"\nwarm-disk first call by phase, CPU s (medians)")
            print(f"{'run':<16}" + "".join(f"{p:>8}" for p in DISK_PHASES + ("other",)))
            print(f"{'warm disk L=2':<16}" + "".join(f"{ph[p]:>8.3f}" for p in DISK_PHASES)
                  + f"{other:>8.3f}")
    goals = []
    if "cold L=2" in med:
        goals.append(("cold first call, 2 layers", med["cold L=2"]["first_s"], "<= 1.0 s"))
    if "warm disk L=2" in med:
        goals.append(("warm-disk first call, 2 layers", med["warm disk L=2"]["first_s"],
                      "<= 0.1 s"))
    if "cold L=1" in med and "cold L=8" in med:
        goals.append(("8 layers / 1 layer, cold", med["cold L=8"]["first_s"] /
                      med["cold L=1"]["first_s"], "<= 1.5x"))
    for name, val, goal in goals:
        print(f"  {name}: {val:.3f} (goal {goal})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "medians": med}, f, indent=1)


if __name__ == "__main__":
    main()
