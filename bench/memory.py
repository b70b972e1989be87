"""Peak memory of a compiled training step on the CPU: nanoGPT (B=16, T=128, C=256, 4 heads,
4 layers; AdamW) as tracejit's compiled step, torch eager and torch.compile, each in a fresh
process (peak RSS is per process). Reported: RSS after building the model and data, peak RSS
over the first `--steps` steps (compiling included), RSS held after them, and the ratios of
tracejit's peak to the others', all measured in this one run.

    python bench/memory.py [--steps N] [--variants tj,tj-noplan,tj-model,eager,tc] [--no-plan]

tj-model compiles the model only (tj.compile(model): a forward and a backward executable with
the residuals between them) and runs the optimizer eagerly.

--no-plan sets TRACEJIT_MEMORY_PLAN=off for the tracejit process (one buffer per intermediate,
as before memory planning), for a before/after comparison in one run."""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TRACEJIT_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

CFG = dict(batch=16, seq=128, n_embd=256, n_head=4, n_layer=4)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(variant: str, steps: int) -> dict:
    import numpy as np
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import models as bm                     # bench/models.py: one step, either library
    w = bm.model_defs.nanogpt("nanogpt-mem", CFG["batch"], CFG["seq"], CFG["n_embd"],
                              CFG["n_head"], CFG["n_layer"])
    state = bm.reference_state(w)
    batch_np = w.data(np.random.default_rng(0))
    if variant == "tj":
        step = bm.build_tj(w, state, "cpu")
        batch = bm.to_lib(bm.tj, batch_np, "cpu")
    elif variant == "tj-model":
        # the model compiled (forward and backward executables, residuals between them), the
        # optimizer eager: what the residual cut (ir/partition.py) changes
        model = w.build(bm.tj)
        model.load_state_dict({k: v.numpy() for k, v in state.items()})
        opt = w.optimizer(bm.tj, model, "cpu")
        step = bm.make_step(bm.tj, w, model, opt, "cpu", call=bm.tj.compile(model))
        batch = bm.to_lib(bm.tj, batch_np, "cpu")
    else:
        step = bm.build_torch(w, state, "cpu", compiled=variant == "tc")
        batch = bm.to_lib(bm.torch, batch_np, "cpu")
    before = _rss_mib()
    losses = [bm.loss_value(step(*batch)) for _ in range(steps)]
    return dict(variant=variant, before_mib=before, peak_mib=_peak_mib(),
                after_mib=_rss_mib(), losses=losses)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--variants", default="tj,eager,tc")
    ap.add_argument("--no-plan", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.steps)))
        return 0
    names = {"tj": "tracejit compiled", "tj-noplan": "tracejit, no memory plan",
             "tj-model": "tracejit compiled model",
             "eager": "torch eager", "tc": "torch.compile"}
    res = {}
    for v in a.variants.split(","):
        env = dict(os.environ)
        key = v
        if v == "tj" and a.no_plan:
            env["TRACEJIT_MEMORY_PLAN"] = "off"
        if v == "tj-noplan":
            env["TRACEJIT_MEMORY_PLAN"], v = "off", "tj"
        p = subprocess.run([sys.executable, __file__, "--child", v, "--steps", str(a.steps)],
                           env=env, capture_output=True, text=True)
        if p.returncode:
            print(f"{names[key]}: failed\n{p.stderr[-2000:]}")
            continue
        res[key] = json.loads(p.stdout.strip().splitlines()[-1])
        r = res[key]
        print(f"{names[key]:28s} RSS before {r['before_mib']:7.1f} MiB, peak {r['peak_mib']:7.1f}"
              f" MiB, after {r['after_mib']:7.1f} MiB (held +{r['after_mib'] - r['before_mib']:.1f}"
              f" MiB); losses {', '.join(f'{x:.4f}' for x in r['losses'][:3])}")
    for k in ("tj", "tj-noplan", "tj-model"):
        for o in ("eager", "tc"):
            if k in res and o in res:
                print(f"peak RSS {names[k]} / {names[o]}: "
                      f"{res[k]['peak_mib'] / res[o]['peak_mib']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
