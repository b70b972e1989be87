"""Data-parallel training of nanoGPT-small on MPI: the samples/s of 2 ranks x 1 thread against
1 rank x 1 thread, and how much of the gradient all-reduce time backward hides.

Model, batch and optimizer as bench/train_step.py (tests/nn/nanogpt_model.py, n_layer=2,
n_head=4, n_embd=128, block_size=64; batch 8x64 per rank, float32, AdamW, clip_grad_norm_),
wrapped in DistributedDataParallel (bucket_cap_mb=25, so PyTorch's 1 MiB first bucket and one
more). Three step kinds: eager, compiled model (Module.compile(), eager optimizer) and the
whole step compiled (its all-reduces are operations of the graph). Each rank processes its
own batch of 8 (weak scaling), so the ideal ratio is 2.0.

Hidden all-reduce, in the 2-rank eager and compiled-model runs: DDP's reducer notes when
backward ended on each rank and how long its end-of-backward callback then waited for the
all-reduces; on the rank whose backward ended last, that wait (`exposed`) is communication
alone (the other rank is already waiting). The same buckets all-reduced back to back with
nothing else running give the full all-reduce time (`full`); hidden = 1 - exposed/full. The
step with and without communication (no_sync), alternating, is reported beside it.

    python bench/distributed.py [--steps N] [--json out.json]

It starts `mpiexec -n 1` and `mpiexec -n 2` of itself (through tracejit.distributed.run's
command line); all figures come from this one run (medians over steps). Machines are shared:
compare the ratios."""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TRACEJIT_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "tests", "nn", "nanogpt_model.py")
CFG = dict(n_layer=2, n_head=4, n_embd=128, block_size=64, vocab_size=65, dropout=0.0, bias=True)
B, T = 8, 64
MODES = ("eager", "model", "whole")


def load_model_module():
    src = open(MODEL).read()
    mod = types.ModuleType("bench_nanogpt_tracejit")
    mod.__file__ = MODEL
    sys.modules[mod.__name__] = mod
    exec(compile(src, MODEL, "exec"), mod.__dict__)
    return mod


def worker(mode: str, steps: int) -> None:
    import tracejit as tj
    import tracejit.distributed as dist
    from tracejit.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    jmod = load_model_module()
    tj.manual_seed(0)
    model = jmod.GPT(jmod.GPTConfig(**CFG))
    if mode == "model":
        model.compile()
    ddp = DDP(model)
    opt = model.configure_optimizers(0.1, 3e-4, (0.9, 0.95), "cpu")

    def train_step(idx, tgt):
        _, loss = ddp(idx, tgt)
        loss.backward()
        tj.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    step = tj.compile(train_step) if mode == "whole" else train_step
    rng = np.random.default_rng(rank)
    batches = [(tj.tensor(rng.integers(0, 65, (B, T))), tj.tensor(rng.integers(0, 65, (B, T))))
               for _ in range(4)]
    for i in range(2):                                  # compile, momentum buffers
        step(*batches[i % 4]).item()
    times, marks = [], []
    dist.barrier()
    t_all = time.perf_counter()
    for i in range(steps):
        t0 = time.perf_counter()
        step(*batches[i % 4]).item()
        times.append(time.perf_counter() - t0)
        marks.append((ddp.reducer.backward_end, ddp.reducer.exposed_s))
    dist.barrier()
    total = time.perf_counter() - t_all
    # per step, the wait of the rank whose backward ended last (CLOCK_MONOTONIC is one clock
    # for all processes of a machine): communication that backward did not hide
    everyone = [None] * world
    dist.all_gather_object(everyone, marks)
    exposed = [max((everyone[r][i] for r in range(world)), key=lambda m: m[0])[1]
               for i in range(steps)]
    full, synced, local = [], [], []
    if world > 1 and mode != "whole":
        # the same step with and without gradient communication, alternating (so that load
        # from elsewhere falls on both alike), and the same buckets all-reduced back to back
        for i in range(steps):
            dist.barrier()
            t0 = time.perf_counter()
            step(*batches[i % 4]).item()
            synced.append(time.perf_counter() - t0)
            dist.barrier()
            with ddp.no_sync():
                t0 = time.perf_counter()
                step(*batches[i % 4]).item()
                local.append(time.perf_counter() - t0)
        red = ddp.reducer
        for _ in range(steps):
            dist.barrier()
            t0 = time.perf_counter()
            works = [dist.all_reduce(tj.Tensor(b.alloc()), dist.ReduceOp.AVG, async_op=True)
                     for b in red.buckets]
            for w in works:
                w.wait()
            full.append(time.perf_counter() - t0)
    if rank == 0:
        nparams = sum(p.numel() for p in model.parameters())
        print(json.dumps({"mode": mode, "world": world, "params": nparams,
                          "step_ms": 1e3 * float(np.median(times)),
                          "samples_per_s": world * B * steps / total,
                          "exposed_ms": 1e3 * float(np.median(exposed)) if mode != "whole"
                          else None,
                          "full_allreduce_ms": 1e3 * float(np.median(full)) if full else None,
                          "synced_ms": 1e3 * float(np.median(synced)) if synced else None,
                          "no_sync_ms": 1e3 * float(np.median(local)) if local else None,
                          "buckets": len(ddp.reducer.buckets)}), flush=True)
    dist.destroy_process_group()


def launch(mode: str, nproc: int, steps: int, cache: str) -> dict:
    from tracejit.distributed import run as launcher
    cmd, env = launcher.build(nproc, [os.path.abspath(__file__), "--worker", mode, "--steps",
                                      str(steps)], launcher.find_mpiexec(), [], 900)
    env["TRACEJIT_CACHE_DIR"] = cache
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=960)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{mode} on {nproc} rank(s) failed:\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", choices=MODES)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.worker:
        worker(a.worker, a.steps)
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="tj_bench_dist_") as cache:
        for mode in a.modes.split(","):
            one = launch(mode, 1, a.steps, cache)
            two = launch(mode, 2, a.steps, cache)
            rows.append((mode, one, two))
    print(f"nanoGPT-small {CFG}, {rows[0][1]['params'] / 1e6:.2f}M parameters, batch {B}x{T} "
          f"per rank, float32, 1 thread per rank, {a.steps} timed steps, "
          f"{rows[0][2]['buckets']} DDP buckets")
    print(f"{'step':<16}{'1 rank samples/s':>18}{'2 ranks samples/s':>19}{'ratio':>8}"
          f"{'synced ms':>11}{'no_sync ms':>12}{'exposed ms':>12}{'all-reduce ms':>15}"
          f"{'hidden':>8}")
    out = []
    for mode, one, two in rows:
        ratio = two["samples_per_s"] / one["samples_per_s"]
        hidden = None
        if two["full_allreduce_ms"]:
            hidden = min(1.0, max(0.0, 1.0 - two["exposed_ms"] / two["full_allreduce_ms"]))
        label = {"eager": "eager", "model": "compiled model", "whole": "compiled step"}[mode]
        print(f"{label:<16}{one['samples_per_s']:>18.1f}{two['samples_per_s']:>19.1f}"
              f"{ratio:>7.2f}x"
              f"{two['synced_ms'] or float('nan'):>11.2f}{two['no_sync_ms'] or float('nan'):>12.2f}"
              f"{two['exposed_ms'] if two['exposed_ms'] is not None else float('nan'):>12.2f}"
              f"{two['full_allreduce_ms'] or float('nan'):>15.2f}"
              f"{'' if hidden is None else f'{100 * hidden:.0f}%':>8}")
        out.append({"mode": mode, "one": one, "two": two, "ratio": ratio, "hidden": hidden})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
