"""First call of a compiled gradient in a new process that finds tracejit's disk cache filled.

Workloads (CPU, float32, one thread):
  chain_grad     tj.grad(tj.compile(f)) of the 200-op elementwise chain (bench/workloads.w6)
  chain_cgrad    tj.compile(tj.grad(f)) of the same chain
  gpt_vg         tj.value_and_grad(tj.compile(loss), argnums=0) of nanoGPT small (2 layers,
                 C=128, 4 heads, B=8, T=64), its parameters passed as a list
  gpt_cvg        tj.compile(tj.value_and_grad(loss)) of the same

Each workload gets a fresh TRACEJIT_CACHE_DIR, filled by one cold process; then `--runs` new
processes each time their first call (median printed, with the cold one). `--tree DIR` runs the
children against another checkout of tracejit (a before/after comparison in one run):

    python bench/grad_first_call.py [--runs 3] [--tree /tmp/base] [--only chain_grad,gpt_vg]
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
WORKLOADS = ("chain_grad", "chain_cgrad", "gpt_vg", "gpt_cvg")

CHILD = r"""
import os, sys, time, json
t0 = time.perf_counter()
import numpy as np
import tracejit as tj
t_import = time.perf_counter() - t0
sys.path.insert(0, os.path.join(BENCH, ".."))
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.join(BENCH, "..", "tests"))

def chain_loss(v):
    import workloads as W
    return W.w6_chain(v).sum()

def gpt():
    from nanogpt_helpers import load_nanogpt
    mod = load_nanogpt("tracejit", "bench_grad_first")
    cfg = mod.GPTConfig(n_layer=2, n_head=4, n_embd=128, block_size=64, vocab_size=65,
                        dropout=0.0, bias=True)
    tj.manual_seed(0)
    model = mod.GPT(cfg)
    slots = [(m, n) for m in model.modules() for n in list(m._parameters)
             if m._parameters[n] is not None]
    owned = [m._parameters[n] for m, n in slots]
    order = {}
    for p in owned:
        order.setdefault(id(p), len(order))
    params = [p.detach().numpy().copy() for p in {id(p): p for p in owned}.values()]

    def loss(ps, idx, tgt):
        # the parameters as arguments (torch.func.functional_call's idea, by hand)
        for (m, n), p in zip(slots, owned):
            m._parameters[n] = ps[order[id(p)]]
        try:
            return model(idx, tgt)[1]
        finally:
            for (m, n), p in zip(slots, owned):
                m._parameters[n] = p
    rng = np.random.default_rng(0)
    return loss, (params, rng.integers(0, 65, (8, 64)), rng.integers(0, 65, (8, 64)))

if WORKLOAD.startswith("chain"):
    fn, args = chain_loss, (np.random.default_rng(0).standard_normal(1024).astype(np.float32),)
    kind = tj.grad
else:
    fn, args = gpt()
    kind = tj.value_and_grad
if WORKLOAD in ("chain_grad", "gpt_vg"):
    g = kind(tj.compile(fn), argnums=0)
else:
    g = tj.compile(kind(fn, argnums=0))
t0 = time.perf_counter()
out = g(*args)
first = time.perf_counter() - t0
leaves = out[1] if WORKLOAD.startswith("gpt") else out
leaves = leaves if isinstance(leaves, (list, tuple)) else [leaves]
check = float(sum(np.abs(np.asarray(t.numpy(), np.float64)).sum() for t in leaves))
print(json.dumps({"first_s": first, "import_s": t_import, "check": check}))
"""


def run_child(workload: str, cache_dir: str, tree: str) -> dict:
    env = dict(os.environ, TRACEJIT_CACHE_DIR=cache_dir, PYTHONPATH=tree,
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TRACEJIT_NUM_THREADS="1")
    code = f"BENCH = {os.path.join(ROOT, 'bench')!r}\nWORKLOAD = {workload!r}\n" + CHILD
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=tree, timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tree", help="another checkout to compare with (its PYTHONPATH)")
    ap.add_argument("--only", default=",".join(WORKLOADS))
    args = ap.parse_args()
    trees = [("this tree", ROOT)] + ([("--tree", os.path.abspath(args.tree))]
                                     if args.tree else [])
    tmp = tempfile.mkdtemp(prefix="tj_bench_grad_first_")
    print(f"first call s, CPU, 1 thread; warm = median of {args.runs} new processes "
          f"(ratios within one run)")
    print(f"{'workload':<13}{'tree':<11}{'cold':>8}{'warm':>8}   warm runs")
    try:
        for w in args.only.split(","):
            warm_med = {}
            for label, tree in trees:
                d = os.path.join(tmp, f"{w}_{len(warm_med)}")
                cold = run_child(w, d, tree)
                warm = [run_child(w, d, tree) for _ in range(args.runs)]
                assert all(abs(r["check"] - cold["check"]) <= 1e-6 * abs(cold["check"])
                           for r in warm), (w, cold, warm)
                med = warm_med[label] = statistics.median(r["first_s"] for r in warm)
                print(f"{w:<13}{label:<11}{cold['first_s']:>8.3f}{med:>8.3f}   "
                      f"{' '.join('%.3f' % r['first_s'] for r in warm)}", flush=True)
                shutil.rmtree(d, ignore_errors=True)
            if len(warm_med) == 2:
                print(f"  {w}: warm first call, this tree / --tree = "
                      f"{warm_med['this tree'] / warm_med['--tree']:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
