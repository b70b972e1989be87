"""One AdamW training step of nanoGPT-small (forward, backward, clip_grad_norm_(1.0), step,
zero_grad), five ways, measured in this one run on one thread:

  (a) tracejit, the whole step compiled as one graph (tj.compile(train_step))
  (b) tracejit, compiled model (tj.compile(model)) + eager loss.backward() (the compiled
      backward) + clip + opt.step() (the fused optimizer step)
  (c) tracejit eager
  (d) torch eager
  (e) torch.compile(model) + a torch.compile'd opt.step() (torch's documented recipe), if
      torch.compile works here; otherwise its error is printed and the row skipped

Model: tests/nn/nanogpt_model.py, GPTConfig(n_layer=2, n_head=4, n_embd=128, block_size=64,
vocab_size=65, dropout=0.0, bias=True), batch 8x64, float32, nanoGPT's configure_optimizers
(AdamW, weight decay 0.1 on matrices, betas (0.9, 0.95)). Before timing, (a) and (d) run three
steps from the same state_dict and must give the same losses (rtol 1e-3); otherwise nothing is
reported. Timed steps run in interleaved rounds (every variant a few steps per round), so load
from other processes falls on all variants alike. Compile caches (tracejit's and Inductor's)
point at a fresh temporary directory, removed at exit, so first-call times are cold compiles.
Figures are medians; the machine may be shared, so compare the ratios, not absolute times.

    python bench/train_step.py [--quick] [--rounds N] [--json bench/results_train_step.json]
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TRACEJIT_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402

_TMP = tempfile.mkdtemp(prefix="tj_bench_train_step_")
os.environ["TRACEJIT_CACHE_DIR"] = os.path.join(_TMP, "tracejit")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(_TMP, "inductor")
os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(_TMP, "triton"))

import numpy as np  # noqa: E402

import tracejit as tj  # noqa: E402

try:
    import torch
    torch.set_num_threads(1)
except ImportError:                      # pragma: no cover - torch is needed for (d)/(e)
    torch = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "tests", "nn", "nanogpt_model.py")
CFG = dict(n_layer=2, n_head=4, n_embd=128, block_size=64, vocab_size=65, dropout=0.0, bias=True)
B, T = 8, 64
LR, WD, BETAS = 3e-4, 0.1, (0.9, 0.95)


def load(lib: str) -> types.ModuleType:
    """The ported model with tracejit's imports, or with torch's put back (as the tests do)."""
    src = open(MODEL).read()
    if lib == "torch":
        for a, b in (("import tracejit as torch", "import torch"),
                     ("import tracejit.nn as nn", "import torch.nn as nn"),
                     ("from tracejit.nn import functional as F",
                      "from torch.nn import functional as F")):
            assert a in src, a
            src = src.replace(a, b)
    mod = types.ModuleType(f"bench_nanogpt_{lib}")
    mod.__file__ = MODEL
    sys.modules[mod.__name__] = mod               # dataclasses (and dynamo) look the module up
    exec(compile(src, MODEL, "exec"), mod.__dict__)
    return mod


def make_step(lib, model, opt, call=None):
    call = model if call is None else call

    def train_step(idx, tgt):
        _, loss = call(idx, tgt)
        loss.backward()
        lib.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return train_step


def loss_value(loss) -> float:
    if torch is not None and isinstance(loss, torch.Tensor):
        return float(loss.detach())
    return float(np.asarray(loss.detach().numpy()))


class Variant:
    """A fresh model loaded from the shared state_dict, its optimizer and its step function."""

    def __init__(self, key: str, label: str, build):
        self.key, self.label, self.build = key, label, build
        self.ms = self.cpu_ms = self.first_s = None
        self.error = None


def build_tracejit(jmod, sd, mode):
    m = jmod.GPT(jmod.GPTConfig(**CFG))
    m.load_state_dict(sd)
    opt = m.configure_optimizers(WD, LR, BETAS, "cpu")
    if mode == "whole":
        step = tj.compile(make_step(tj, m, opt))
    elif mode == "model":
        step = make_step(tj, m, opt, call=tj.compile(m))
    else:
        step = make_step(tj, m, opt)
    conv = tj.tensor
    return step, conv


def build_torch(tmod, sd, compiled):
    torch.manual_seed(0)
    m = tmod.GPT(tmod.GPTConfig(**CFG))
    m.load_state_dict(sd)
    opt = m.configure_optimizers(WD, LR, BETAS, "cpu")
    if not compiled:
        return make_step(torch, m, opt), torch.tensor
    cm = torch.compile(m)

    @torch.compile(fullgraph=False)
    def opt_step():
        opt.step()

    class _Opt:                                   # the compiled step with zero_grad beside it
        step = staticmethod(opt_step)
        zero_grad = staticmethod(opt.zero_grad)
    return make_step(torch, m, _Opt, call=cm), torch.tensor


def time_steps(step, batch, n):
    """Wall and process CPU times of n steps, each finished by reading its loss. Every library
    runs one thread, so a step's CPU time is its own work: another process's load moves it far
    less than the wall time (a descheduled step's wait is wall time only)."""
    ts, cpu = [], []
    for _ in range(n):
        c = time.process_time()
        t = time.perf_counter()
        loss_value(step(*batch))
        ts.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return ts, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (well under 3 min)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="timed rounds (each runs every variant 3 (--quick) or 5 steps)")
    ap.add_argument("--no-torch-compile", action="store_true", help="skip variant (e)")
    ap.add_argument("--json", default=None,
                    help="also write the figures here (e.g. bench/results_train_step.json)")
    a = ap.parse_args()
    if torch is None:
        print("torch is not installed: this bench compares against it", file=sys.stderr)
        return 2
    rounds = a.rounds or (5 if a.quick else 12)
    per_round = 3 if a.quick else 5
    warmup = 2 if a.quick else 5
    try:
        return run(a, rounds, per_round, warmup)
    finally:
        shutil.rmtree(_TMP, ignore_errors=True)


def run(a, rounds, per_round, warmup) -> int:
    tmod, jmod = load("torch"), load("tracejit")
    torch.manual_seed(0)
    ref = tmod.GPT(tmod.GPTConfig(**CFG))
    sd_torch = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    sd_np = {k: v.numpy().copy() for k, v in sd_torch.items()}
    nparams = sum(p.numel() for p in ref.parameters())
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, CFG["vocab_size"], (B, T)), rng.integers(0, CFG["vocab_size"], (B, T)))
               for _ in range(3)]

    print(f"nanoGPT-small {CFG}, {nparams / 1e6:.2f}M parameters, batch {B}x{T}, float32, "
          f"1 thread; torch {torch.__version__}, tracejit {getattr(tj, '__version__', '?')}")

    # -- correctness gate: (a) against (d), three steps from the same state_dict ----------
    step_a, _ = build_tracejit(jmod, sd_np, "whole")
    step_d, _ = build_torch(tmod, sd_torch, compiled=False)
    la = []
    for i, (x, y) in enumerate(batches):
        t0 = time.perf_counter()
        la.append(loss_value(step_a(tj.tensor(x), tj.tensor(y))))
        if i == 0:
            first_a = time.perf_counter() - t0            # the cold compile: nothing ran before
    ld = [loss_value(step_d(torch.tensor(x), torch.tensor(y))) for x, y in batches]
    ok = np.allclose(la, ld, rtol=1e-3, atol=0)
    print("check (a) vs (d), losses after steps 1..3:")
    print("  tracejit whole step: " + "  ".join(f"{v:.9g}" for v in la))
    print("  torch eager:         " + "  ".join(f"{v:.9g}" for v in ld))
    if not ok:
        print("MISMATCH beyond rtol 1e-3: refusing to report timings", file=sys.stderr)
        return 1
    print(f"  agree (max rel diff {max(abs(p - q) / abs(q) for p, q in zip(la, ld)):.2e})")
    del step_a, step_d

    variants = [
        Variant("a", "tracejit: whole step, one graph", lambda: build_tracejit(jmod, sd_np, "whole")),
        Variant("b", "tracejit: compiled model + fused opt", lambda: build_tracejit(jmod, sd_np, "model")),
        Variant("c", "tracejit: eager", lambda: build_tracejit(jmod, sd_np, "eager")),
        Variant("d", "torch: eager", lambda: build_torch(tmod, sd_torch, False)),
        Variant("e", "torch.compile model + opt.step", lambda: build_torch(tmod, sd_torch, True)),
    ]
    x, y = batches[0]
    live = []
    for v in variants:                                # build, compile (first call) and warm up
        if v.key == "e" and a.no_torch_compile:
            v.error = "skipped (--no-torch-compile)"
            continue
        try:
            step, conv = v.build()
            batch = (conv(x), conv(y))
            t0 = time.perf_counter()
            loss_value(step(*batch))
            v.first_s = first_a if v.key == "a" else time.perf_counter() - t0
            time_steps(step, batch, warmup)
        except Exception as e:                        # (e) without a working compiler
            if v.key != "e":
                raise
            v.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            traceback.print_exc(limit=2, file=sys.stderr)
            print(f"  ({v.key}) skipped: {v.error}", flush=True)
            continue
        v.step, v.batch, v.ts, v.cpu = step, batch, [], []
        live.append(v)
        print(f"  ({v.key}) compiled/warmed, first call {v.first_s:.2f} s", flush=True)
    # Timed rounds interleave the variants, so load from other processes falls on all of them.
    for _ in range(rounds):
        for v in live:
            ts, cpu = time_steps(v.step, v.batch, per_round)
            v.ts += ts
            v.cpu += cpu
    for v in live:
        v.ms = float(np.median(v.ts)) * 1e3
        v.cpu_ms = float(np.median(v.cpu)) * 1e3
        if v.key == "a":
            v.misses = v.step.cache_info().misses

    by = {v.key: v for v in variants}
    tok = B * T
    reps = rounds * per_round
    print(f"\nmedian of {reps} steps ({rounds} interleaved rounds of {per_round} per variant) "
          f"after {warmup} warm-up steps; first call = the first step "
          f"of a fresh model, trace + compile included;\n(a)'s is the check's first step, the "
          f"process's first compile on empty caches; (b) may reuse kernels (a) left in the caches)")
    print(f"| {'variant':40s} | {'ms/step':>8s} | {'tokens/s':>9s} | {'(a) time / this':>15s} "
          f"| {'first call s':>12s} | {'p25-p75 ms':>13s} |")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 11}|{'-' * 17}|{'-' * 14}|{'-' * 15}|")
    for v in variants:
        if v.ms is None:
            print(f"| ({v.key}) {v.label:36s} | {'-':>8s} | {'-':>9s} | {'-':>15s} | {'-':>12s} | {'-':>13s} |"
                  f"  {v.error}")
            continue
        q1, q3 = np.percentile(v.ts, [25, 75]) * 1e3
        spread = f"{q1:.1f}-{q3:.1f}"
        first = f"{v.first_s:.2f}" if v.key in ("a", "b", "e") else f"{v.first_s:.3f}"
        print(f"| ({v.key}) {v.label:36s} | {v.ms:8.2f} | {tok / v.ms * 1e3:9.0f} | "
              f"{by['a'].ms / v.ms:15.3f} | {first:>12s} | {spread:>13s} |")
    print()
    for k in ("b", "e", "d", "c"):
        if by[k].ms:
            print(f"(a)/({k}) time ratio: {by['a'].ms / by[k].ms:.3f}   "
                  f"(({k}) is {by[k].ms / by['a'].ms:.2f}x the whole-step time); "
                  f"CPU-time ratio {by['a'].cpu_ms / by[k].cpu_ms:.3f}")
    print(f"first call (compile): (a) {by['a'].first_s:.2f} s"
          + (f", (e) {by['e'].first_s:.2f} s" if by["e"].first_s else f", (e) {by['e'].error}"))
    print(f"(a) compiled once: cache misses after all steps = {getattr(by['a'], 'misses', '?')}")
    if a.json:
        out = {"config": CFG, "batch": [B, T], "rounds": rounds, "per_round": per_round, "warmup": warmup,
               "torch": torch.__version__, "gate_losses": {"a": la, "d": ld},
               "variants": {v.key: {"label": v.label, "ms": v.ms, "first_call_s": v.first_s,
                                    "steps_ms": [t * 1e3 for t in getattr(v, "ts", [])],
                                    "cpu_ms": v.cpu_ms,
                                    "error": v.error} for v in variants}}
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
