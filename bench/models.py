"""Real models, one training step each (forward, backward, AdamW step, zero_grad), tracejit
against PyTorch, measured in this one run:

  tracejit      the whole step compiled as one graph: tj.compile(train_step)
  tracejit graphs  on cuda, the same with mode="reduce-overhead": the step replayed from a
                CUDA graph (runtime/cuda_graphs.py; --no-cuda-graphs leaves it out)
  torch eager   the same step in PyTorch
  torch.compile torch.compile(model) + a torch.compile'd opt.step() (when it works here)

Workloads (bench/model_defs.py): nanoGPT small (B=8 T=64 C=128, 4 heads, 2 layers), nanoGPT
12.8M (B=16 T=256 C=512, 8 heads, 4 layers; on the CPU only with --big), makemore's MLP, an
LSTM unrolled over 20 steps, a small CNN, and on cuda nanoGPT 12.8M under autocast to bfloat16.

Before anything is timed, tracejit and torch eager run two steps from the same weights and must
give the same losses. Then: the first call of tracejit (trace + compile, empty caches) and of
torch.compile; the first call in a new process that finds tracejit's disk cache; medians of
interleaved timed rounds; kernel count and native calls (launches) per step; and a per-kernel
time table (TRACEJIT_PROFILE, tracejit/runtime/profiler.py; --no-profile skips it). On the CPU
with one thread, each step's process CPU time too: its ratio moves far less than the wall-time
ratio when other processes load the machine. Compare ratios, not absolute times: machines are
shared and noisy.

    python bench/models.py [--device cpu|cuda] [--quick] [--big] [--only NAME,...]
                           [--no-profile] [--threads N] [--json FILE]
"""
from __future__ import annotations

import argparse
import os
import sys

if __name__ == "__main__":
    _THREADS = "1"
    for _i, _a in enumerate(sys.argv):
        if _a == "--threads" and _i + 1 < len(sys.argv):
            _THREADS = sys.argv[_i + 1]
    for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "TRACEJIT_NUM_THREADS"):
        os.environ[_v] = _THREADS

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import numpy as np  # noqa: E402



def _load_model_defs():
    """bench/model_defs.py, by path: a bench directory on sys.path would make "models" name
    this file for every later import (the tests' models/ package among them)."""
    import importlib.util
    if "bench_model_defs" not in sys.modules:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_defs.py")
        spec = importlib.util.spec_from_file_location("bench_model_defs", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_model_defs"] = mod          # dataclasses look their module up
        spec.loader.exec_module(mod)
    return sys.modules["bench_model_defs"]


model_defs = _load_model_defs()

import tracejit as tj  # noqa: E402
from tracejit.runtime import profiler  # noqa: E402

try:
    import torch
except ImportError:                          # pragma: no cover - the comparison needs torch
    torch = None


# -- one step, either library -------------------------------------------------------------------
def make_step(lib, w: model_defs.Workload, model, opt, device, call=None):
    call = model if call is None else call

    def train_step(*batch):
        if w.autocast:
            with lib.autocast(device, dtype=lib.bfloat16):
                loss = w.loss(lib, call, *batch)
        else:
            loss = w.loss(lib, call, *batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return train_step


def to_lib(lib, arrays, device):
    if lib is torch:
        return tuple(torch.tensor(a, device=device) for a in arrays)
    return tuple(tj.tensor(a, device=device) for a in arrays)


def loss_value(loss) -> float:
    return float(loss.detach().float().cpu().item()) if torch is not None and \
        isinstance(loss, torch.Tensor) else float(loss.item())


def reference_state(w: model_defs.Workload, seed: int = 0) -> dict:
    """The weights every variant starts from: torch's initialisation under a fixed seed."""
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in w.build(torch).state_dict().items()}


def build_tj(w, state, device, compiled=True, mode=None):
    model = w.build(tj)
    model.load_state_dict({k: v.numpy() for k, v in state.items()})
    model.to(device)
    opt = w.optimizer(tj, model, device)
    step = make_step(tj, w, model, opt, device)
    return tj.compile(step, mode=mode) if compiled else step


def graphs_variant(w, state, device, batch_np, losses, tol):
    """(step, batch) of the CUDA-graph step, after its first two losses matched torch's."""
    step = build_tj(w, state, device, mode="reduce-overhead")
    batch = to_lib(tj, batch_np, device)
    lg = [loss_value(step(*batch)) for _ in range(2)]
    if not np.allclose(lg, losses, rtol=tol, atol=1e-5):
        raise RuntimeError(f"CUDA-graph step losses {lg} disagree with torch eager's {losses}")
    return step, batch


def build_torch(w, state, device, compiled):
    model = w.build(torch)
    model.load_state_dict(state)
    model.to(device)
    opt = w.optimizer(torch, model, device)
    if not compiled:
        return make_step(torch, w, model, opt, device)
    cm = torch.compile(model)

    @torch.compile(fullgraph=False)
    def opt_step():
        opt.step()

    class _Opt:
        step = staticmethod(opt_step)
        zero_grad = staticmethod(opt.zero_grad)
    return make_step(torch, w, model, _Opt, device, call=cm)


def sync(device):
    if device == "cuda" and torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


# -- measurements -------------------------------------------------------------------------------
# With one thread per library, a step's process CPU time is its own work: on a machine other
# processes load it moves far less than the wall time does (a descheduled step waits, and that
# wait counts as wall time only). The wall-time ratio stays the figure of record.
CPU_NOTE = "process CPU time, 1 thread: less sensitive to other load than wall time"
def first_call_in_new_process(name: str, device: str, big: bool, runs: int = 3) -> float | None:
    """The first step in a fresh interpreter, tracejit's disk cache already filled: the median
    of `runs` new processes (one process is one sample of a noisy machine)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--first-call", name, "--device", device,
           "--threads", os.environ.get("TRACEJIT_NUM_THREADS", "1")] + ["--big"] * big
    times = []
    for _ in range(runs):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            print(f"  (new-process first call of {name} failed: {proc.stderr.strip()[-400:]})")
            return None
        times.append(json.loads(lines[-1])["first_s"])
    print(f"  first call from the disk cache in a new process: "
          f"{' '.join(f'{t:.3f}' for t in times)} s (median {np.median(times):.3f})")
    return float(np.median(times))


def first_call_only(name: str, device: str, big: bool) -> int:
    w = next(x for x in model_defs.workloads(device, big) if x.name == name)
    state = reference_state(w)
    batch_np = w.data(np.random.default_rng(0))
    step = build_tj(w, state, device)
    batch = to_lib(tj, batch_np, device)
    t0 = time.perf_counter()
    loss_value(step(*batch))
    print(json.dumps({"first_s": time.perf_counter() - t0}))
    return 0


def kernel_counts(step, batch) -> int:
    low = step.lower(*batch)
    return sum(1 for ln in low.kernels.splitlines() if ln.strip())


def profile_table(w, state, device, batch_np, steps: int) -> tuple[str, float]:
    """A tracejit step built with TRACEJIT_PROFILE=1, run `steps` times: the per-kernel table
    and the native calls (kernels + extern calls) per step."""
    os.environ["TRACEJIT_PROFILE"] = "1"
    try:
        step = build_tj(w, state, device)
        batch = to_lib(tj, batch_np, device)
        loss_value(step(*batch))
        profiler.reset()
        for _ in range(steps):
            loss_value(step(*batch))
        calls = sum(e.calls for e in profiler.entries()) / steps
        return profiler.table(top=15), calls
    finally:
        os.environ.pop("TRACEJIT_PROFILE", None)


class Variant:
    def __init__(self, key, label, build):
        self.key, self.label, self.build = key, label, build
        self.ts: list[float] = []
        self.cpu: list[float] = []     # process CPU time per step (see CPU_NOTE)
        self.first_s = self.error = None
        self.step = None


def run_workload(w, a, rounds, per_round, warmup) -> dict:
    device = a.device
    state = reference_state(w)
    batch_np = w.data(np.random.default_rng(0))
    tol = 3e-2 if w.autocast else 1e-3
    res = {"name": w.name, "cfg": w.cfg, "device": device}
    print(f"\n## {w.name} {w.cfg}", flush=True)

    # correctness gate: two steps of tracejit compiled and torch eager from the same weights
    t0 = time.perf_counter()
    tj_step = build_tj(w, state, device)
    tb = to_lib(tj, batch_np, device)
    lt = [loss_value(tj_step(*tb))]
    first_tj = time.perf_counter() - t0              # model build + trace + cold compile
    lt.append(loss_value(tj_step(*tb)))
    t_step = build_torch(w, state, device, compiled=False)
    tt = to_lib(torch, batch_np, device)
    lr = [loss_value(t_step(*tt)) for _ in range(2)]
    ok = np.allclose(lt, lr, rtol=tol, atol=1e-5)
    print(f"  losses, 2 steps: tracejit {lt[0]:.6g} {lt[1]:.6g}; torch eager {lr[0]:.6g} "
          f"{lr[1]:.6g}: {'agree' if ok else 'MISMATCH'} (rtol {tol})")
    res.update(losses_tracejit=lt, losses_torch=lr, agree=bool(ok))
    if not ok:
        res["error"] = "losses disagree: not timed"
        return res
    res["kernels"] = kernel_counts(tj_step, tb)
    res["tracejit_first_call_s"] = first_tj

    variants = [Variant("tj", "tracejit compiled", lambda: (tj_step, tb)),
                Variant("eager", "torch eager", lambda: (t_step, tt))]
    if device == "cuda" and a.cuda_graphs:
        variants.append(Variant("tjg", "tracejit reduce-overhead (CUDA graphs)",
                                lambda: graphs_variant(w, state, device, batch_np, lr, tol)))
    if not a.no_torch_compile:
        variants.append(Variant("tc", "torch.compile",
                                lambda: (build_torch(w, state, device, True),
                                         to_lib(torch, batch_np, device))))
    live = []
    for v in variants:
        try:
            v.step, v.batch = v.build()
            t0 = time.perf_counter()
            loss_value(v.step(*v.batch))
            v.first_s = time.perf_counter() - t0
            for _ in range(warmup):
                loss_value(v.step(*v.batch))
            live.append(v)
        except Exception as e:                    # torch.compile without a working compiler
            if v.key not in ("tc", "tjg"):
                raise
            v.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
            print(f"  {v.label} skipped: {v.error}")
    for _ in range(rounds):                       # interleaved: load falls on all alike
        for v in live:
            for _ in range(per_round):
                sync(device)
                c = time.process_time()
                t = time.perf_counter()
                loss_value(v.step(*v.batch))
                v.ts.append(time.perf_counter() - t)
                v.cpu.append(time.process_time() - c)
    by = {v.key: v for v in variants}
    for v in variants:
        res[f"{v.key}_ms"] = float(np.median(v.ts)) * 1e3 if v.ts else None
        res[f"{v.key}_cpu_ms"] = float(np.median(v.cpu)) * 1e3 if v.cpu else None
        if v.key == "tc":
            res["tc_first_call_s"] = v.first_s
            res["tc_error"] = v.error
    res["tracejit_first_call_cached_new_process_s"] = first_call_in_new_process(
        w.name, device, a.big)
    if a.profile:
        table, calls = profile_table(w, state, device, batch_np, steps=max(10, per_round))
        res["launches_per_step"] = calls
        res["profile"] = table
    tjm = res["tj_ms"]
    print(f"  tracejit {tjm:.3f} ms | torch eager {res['eager_ms']:.3f} ms"
          + (f" | torch.compile {res['tc_ms']:.3f} ms" if res.get("tc_ms") else "")
          + f" | kernels {res['kernels']}"
          + (f" | launches/step {res['launches_per_step']:.0f}" if a.profile else ""))
    res["ratio_vs_eager"] = tjm / res["eager_ms"]
    if "tjg" in by:
        g = by["tjg"]
        exe = getattr(g.step, "lower", None) and g.step.lower(*g.batch)._entry.exe
        res["graphs_error"] = g.error
        res["graphs_fallback"] = getattr(exe, "plain_reason", None)
        res["graphs_stats"] = getattr(exe, "stats", None)
        if res.get("tjg_ms"):
            res["graphs_ratio_vs_compile"] = res["tjg_ms"] / res["tc_ms"] if res.get("tc_ms") \
                else None
            print(f"  tracejit CUDA graphs {res['tjg_ms']:.3f} ms: "
                  f"{res['tjg_ms'] / tjm:.2f}x tracejit's plain launches"
                  + (f", {res['graphs_ratio_vs_compile']:.2f}x torch.compile"
                     if res["graphs_ratio_vs_compile"] else "")
                  + (f"; FELL BACK to plain launches: {res['graphs_fallback']}"
                     if res["graphs_fallback"] else f"; {res['graphs_stats']}"))
    res["ratio_vs_compile"] = tjm / res["tc_ms"] if res.get("tc_ms") else None
    if device == "cpu" and str(a.threads) == "1" and res.get("tc_cpu_ms"):
        res["cpu_ratio_vs_compile"] = res["tj_cpu_ms"] / res["tc_cpu_ms"]
        print(f"  CPU time per step: tracejit {res['tj_cpu_ms']:.3f} ms | torch.compile "
              f"{res['tc_cpu_ms']:.3f} ms | ratio {res['cpu_ratio_vs_compile']:.2f} "
              f"({CPU_NOTE})")
    if a.profile:
        print(res["profile"])
    del by
    return res


def summary(results: list[dict], device: str) -> str:
    lines = [f"| workload ({device}) | tracejit ms | torch eager ms | torch.compile ms | "
             f"tj/eager | tj/compile | tj/compile CPU time | tj first call s (cold / disk cache, "
             f"new process) | torch.compile first call s | kernels |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda x, p=3: "-" if x is None else f"{x:.{p}f}"          # noqa: E731
    for r in results:
        if r.get("error"):
            lines.append(f"| {r['name']} | {r['error']} | | | | | | | | |")
            continue
        lines.append(f"| {r['name']} | {f(r['tj_ms'])} | {f(r['eager_ms'])} | "
                     f"{f(r.get('tc_ms'))} | {f(r['ratio_vs_eager'], 2)} | "
                     f"{f(r.get('ratio_vs_compile'), 2)} | "
                     f"{f(r.get('cpu_ratio_vs_compile'), 2)} | "
                     f"{f(r['tracejit_first_call_s'], 2)} / "
                     f"{f(r['tracejit_first_call_cached_new_process_s'], 2)} | "
                     f"{f(r.get('tc_first_call_s'), 2)} | {r['kernels']} |")
    for r in results:
        if r.get("tjg_ms") or r.get("graphs_error"):
            lines.append(f"CUDA graphs, {r['name']}: " + (
                f"{f(r['tjg_ms'])} ms, {f(r['tjg_ms'] / r['tj_ms'], 2)}x plain launches, "
                f"{f(r.get('graphs_ratio_vs_compile'), 2)}x torch.compile"
                + (f" (fell back: {r['graphs_fallback']})" if r.get("graphs_fallback") else "")
                if r.get("tjg_ms") else f"failed: {r['graphs_error']}"))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a few minutes)")
    ap.add_argument("--big", action="store_true", help="also nanoGPT 12.8M on the CPU")
    ap.add_argument("--only", default="", help="comma-separated workload names")
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="skip the per-kernel time table (TRACEJIT_PROFILE run)")
    ap.add_argument("--threads", default="1", help="CPU threads for every library")
    ap.add_argument("--no-torch-compile", action="store_true")
    ap.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                    help="on cuda, leave out the tj.compile(mode='reduce-overhead') row")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--first-call", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if torch is None:
        print("torch is not installed: this bench compares against it", file=sys.stderr)
        return 2
    torch.set_num_threads(int(a.threads))
    if a.first_call:
        return first_call_only(a.first_call, a.device, a.big)
    tmp = tempfile.mkdtemp(prefix="tj_bench_models_")
    # empty caches: first calls are cold compiles; the new-process run finds this disk cache
    os.environ["TRACEJIT_CACHE_DIR"] = os.path.join(tmp, "tracejit")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(tmp, "inductor")
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(tmp, "triton"))
    rounds, per_round, warmup = (3, 3, 2) if a.quick else (8, 5, 3)
    only = {s for s in a.only.split(",") if s}
    print(f"bench/models.py: device {a.device}, {a.threads} thread(s), torch {torch.__version__}; "
          f"median of {rounds * per_round} steps per variant in {rounds} interleaved rounds")
    results = []
    try:
        for w in model_defs.workloads(a.device, a.big):
            if only and w.name not in only:
                continue
            try:
                results.append(run_workload(w, a, rounds, per_round, warmup))
            except Exception as e:        # one broken workload must not hide the others
                traceback.print_exc()
                results.append({"name": w.name, "agree": False,
                                "error": f"{type(e).__name__}: {str(e)[:200]}"})
            # after each workload, so a run stopped by a time limit keeps what it measured
            print("\n" + summary(results, a.device), flush=True)
            if a.json:
                with open(a.json, "w") as fh:
                    json.dump(results, fh, indent=1, default=str)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        print(f"wrote {a.json}")
    return 0 if all(r.get("agree") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
