"""Data-parallel training on MPI: the samples/s of 2 ranks x 1 thread against 1 rank x 1
thread, how much of the gradient all-reduce time backward hides, and what the cross-rank
signature check of every collective costs.

Two models, each rank on its own batch (weak scaling, so the ideal ratio is 2.0), float32,
AdamW, DistributedDataParallel(bucket_cap_mb=25: PyTorch's 1 MiB first bucket, then 25 MiB):
- `small`: the issue's nanoGPT-small step (tests/nn/nanogpt_model.py, n_layer=2, n_head=4,
  n_embd=128, block_size=64, batch 8x64 per rank, clip_grad_norm_): its all-reduce is 0.4-2 ms
  of a 20-60 ms step, too small a share to measure a hidden fraction from step times against
  noise (the timestamps below measure it);
- `mlp`: a wide MLP (256 -> 1024 -> 1024 -> 1024 -> 256, ReLU, 2.6M parameters, batch 32 per
  rank, MSE) whose 10.5 MB of gradients take a real share of its step: the hidden fraction is
  measured there.
Three step kinds: eager, compiled model (Module.compile(), eager optimizer) and the whole step
compiled (its all-reduces are operations of the graph).

Hidden all-reduce (2 ranks), from three variants of the same work, measured in interleaved
rounds (so that load from elsewhere falls on all alike), medians of per-step times:
  t_allreduce  the same buckets all-reduced back to back, nothing else running;
  t_overlap    the DDP step: bucket all-reduces started during backward;
  t_after      the same DDP step with every bucket's all-reduce started only once backward has
               ended (`ddp.reducer.overlap = False`): the same buckets, copies and waits, in
               every mode (a compiled step traces its starts after the last gradient), so the
               two differ only in where the starts are;
  hidden = (t_after - t_overlap) / t_allreduce (1.0: all of it hidden; noise can push it a
  little outside [0, 1]).
A second estimate reads the time each step spends blocked in the all-reduces' waits (every
`Work.wait`, the same in all modes), which compute noise does not move:
  wait ms      median per step, DDP step (overlap) / the same step without overlap (after);
  hidden(waits) = 1 - wait_overlap / wait_after.
A third reads timestamps on each rank, which load elsewhere moves least: each all-reduce's
interval from its start (Work.started_at) to the moment it was seen complete (Work.done_at:
the MPI progress thread's successful test, or the end of a blocking wait), per DDP step:
  span ms          the intervals' total per step;
  before bwd end   the share of that total lying before backward ended (taken as the last
                   bucket's start, since its last gradient is backward's last): the issue's
                   "hidden behind backward";
  unblocked        the share during which the rank was not blocked in the wait (hidden
                   behind backward or behind the optimizer work that does not need that
                   bucket: ir/defer_waits.py).

    python bench/distributed.py [--steps N] [--rounds R] [--configs small,mlp]
                                [--modes eager,model,whole] [--bucket-cap-mb MB] [--repeat K]
                                [--floor] [--mpiexec-args ARGS] [--json out.json]

`--repeat K` (default 1) launches 1 rank and 2 ranks K times each, alternating (1, 2, 1, 2, ...),
and reports the median of the K ratios of adjacent pairs (with their range), so that a load
change on a shared machine between two launches skews one pair, not the figure; the CPU
columns are medians over the K launches, and the hidden-share columns come from the first
2-rank launch (the later ones time the DDP step only).

`--floor` adds, in each repeat, the hardware floor: two independent 1-rank processes (no MPI
between them) pinned to cores 0 and 1, as mpiexec binds 2 ranks, timed over the same steps at
the same time; their summed samples/s against the 1-rank launch before them is the ratio this
machine permits without any communication (on a 2-core machine, below 2.0: caches, memory
bandwidth and other jobs are shared), and "2 ranks reach N% of the floor's ratio" is what the
communication itself costs.

`--bucket-cap-mb` (default 25, PyTorch's) sets DDP's bucket_cap_mb: with 25 the wide MLP has
two buckets, its last layer (1 MiB, as PyTorch's first bucket) and the other 9.5 MB, which is
complete only when backward's last GEMM (the first layer's weight gradient) is, so at most the
first bucket's share can overlap; smaller buckets (2) let more of it travel during backward.
"cpu ms" is rank 0's CPU time per DDP step (all its threads), less sensitive than wall time to
other load on a shared machine, and "main ms 2r" that of its main thread alone (the rest is
MPI's progress thread); collectives started in compiled code are advanced by MPI's
progress thread (`TRACEJIT_MPI_PROGRESS_THREAD=0`: polled between the program's steps instead,
and with `TRACEJIT_MPI_PUMP_MIN_BYTES=N` those under N bytes; distributed/mpi_backend.py's
wants_progress_thread).

It starts `mpiexec -n 1` and `mpiexec -n 2` of itself (through tracejit.distributed.run's
command line); all figures come from this one run. Machines are shared: compare the ratios."""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TRACEJIT_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
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
MLP_WIDTHS, MLP_BATCH = (256, 1024, 1024, 1024, 256), 32
MODES = ("eager", "model", "whole")
CONFIGS = ("small", "mlp")


def load_model_module():
    src = open(MODEL).read()
    mod = types.ModuleType("bench_nanogpt_tracejit")
    mod.__file__ = MODEL
    sys.modules[mod.__name__] = mod
    exec(compile(src, MODEL, "exec"), mod.__dict__)
    return mod


def make(config: str, rank: int):
    """(model, optimizer, batches, loss(module, batch)) of a config, the same on every rank
    but for the batches."""
    import tracejit as tj
    tj.manual_seed(0)
    rng = np.random.default_rng(rank)
    if config == "small":
        jmod = load_model_module()
        model = jmod.GPT(jmod.GPTConfig(**CFG))
        opt = model.configure_optimizers(0.1, 3e-4, (0.9, 0.95), "cpu")
        batches = [(tj.tensor(rng.integers(0, 65, (B, T))), tj.tensor(rng.integers(0, 65, (B, T))))
                   for _ in range(4)]
        return model, opt, batches, lambda m, b: m(*b)[1], B
    layers = []
    for i, (n_in, n_out) in enumerate(zip(MLP_WIDTHS[:-1], MLP_WIDTHS[1:])):
        layers.append(tj.nn.Linear(n_in, n_out))
        if i < len(MLP_WIDTHS) - 2:
            layers.append(tj.nn.ReLU())
    model = tj.nn.Sequential(*layers)
    opt = tj.optim.AdamW(model.parameters(), lr=1e-4)
    batches = [(tj.tensor(rng.standard_normal((MLP_BATCH, MLP_WIDTHS[0])).astype(np.float32)),
                tj.tensor(rng.standard_normal((MLP_BATCH, MLP_WIDTHS[-1])).astype(np.float32)))
               for _ in range(4)]
    return model, opt, batches, lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), MLP_BATCH


def start_together(sync_dir: str, n: int) -> None:
    """Wait until n independent processes (the hardware floor's) have reached this point, so
    that their timed steps run at the same time: each leaves a file in sync_dir."""
    open(os.path.join(sync_dir, f"ready.{os.getpid()}"), "w").close()
    deadline = time.monotonic() + 600
    while len([f for f in os.listdir(sync_dir) if f.startswith("ready.")]) < n:
        if time.monotonic() > deadline:
            raise SystemExit("the other floor process never got ready")
        time.sleep(1e-3)


def worker(config: str, mode: str, steps: int, rounds: int, cap_mb: float,
           hidden: bool = True, pin: int | None = None, sync_dir: str | None = None) -> None:
    if pin is not None:       # the floor's processes: one core each, as mpiexec binds 2 ranks
        os.sched_setaffinity(0, {pin})
    import tracejit as tj
    import tracejit.distributed as dist
    from tracejit.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    model, opt, batches, loss_of, per_rank = make(config, rank)
    if mode == "model":
        model.compile()
    ddp = DDP(model, bucket_cap_mb=cap_mb)

    def finish():
        if config == "small":
            tj.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def overlap_step(*b):
        loss = loss_of(ddp, b)
        loss.backward()
        finish()
        return loss

    def after_step(*b):
        ddp.reducer.overlap = False      # (read while tracing, in a compiled step)
        try:
            loss = loss_of(ddp, b)
            loss.backward()
        finally:
            ddp.reducer.overlap = True
        finish()
        return loss

    if mode == "whole":
        overlap_step, after_step = tj.compile(overlap_step), tj.compile(after_step)
    for i in range(2):                                  # compile, optimizer state
        overlap_step(*batches[i % 4]).item()
        if world > 1:
            after_step(*batches[i % 4]).item()
    # samples/s of the DDP step alone
    if sync_dir is not None:
        start_together(sync_dir, 2)
    dist.barrier()
    t_all, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
    for i in range(steps):
        overlap_step(*batches[i % 4]).item()
    cpu, main = time.process_time() - cpu, time.thread_time() - main
    dist.barrier()
    total = time.perf_counter() - t_all
    out = {"config": config, "mode": mode, "world": world,
           "params": sum(p.numel() for p in model.parameters()),
           "samples_per_s": world * per_rank * steps / total,
           "cpu_ms_per_step": 1e3 * cpu / steps,
           "main_cpu_ms_per_step": 1e3 * main / steps,
           "buckets": len(ddp.reducer.buckets)}
    if world > 1 and hidden:
        out.update(hidden_rounds(ddp, dist, tj, overlap_step, after_step, batches, steps,
                                 rounds))
        out.update(check_cost(dist, tj, rounds))
    if rank == 0:
        print(json.dumps(out), flush=True)
    dist.destroy_process_group()


WAITED = [0.0]          # seconds spent in Work.wait so far (timed_waits)
# (started, wait called, seen complete) of each collective waited for (timed_waits)
INTERVALS: list[tuple[float, float, float]] = []


def timed_waits() -> None:
    """Count the time every collective's wait() blocks (DDP's and compiled code's alike), and
    note each one's interval (Work.started_at, the wait, Work.done_at)."""
    from tracejit.distributed import base
    wait = base.Work.wait

    def timed(self, timeout=None):
        t0 = time.perf_counter()
        fresh = not self._done
        try:
            return wait(self, timeout)
        finally:
            WAITED[0] += time.perf_counter() - t0
            if fresh and self.done_at is not None:
                INTERVALS.append((self.started_at, t0, self.done_at))
    base.Work.wait = timed


def interval_shares(steps: list[list[tuple[float, float, float]]]) -> tuple[float, float]:
    """From each step's all-reduce intervals (timestamps on this rank, so other load on the
    machine moves them far less than it moves step times): the share of all-reduce time that
    lies before backward ended, and the share during which the rank was not blocked in a wait.
    Backward's end is taken as the last bucket's start: its last gradient is backward's last
    (in every mode; with overlap off every start is there, so that share is 0)."""
    total = before = blocked = 0.0
    for ivs in steps:
        if not ivs:
            continue
        end = max(s for s, _, _ in ivs)
        for s, w, d in ivs:
            total += d - s
            before += max(0.0, min(d, end) - s)
            blocked += max(0.0, d - max(w, s))
    if total <= 0:
        return 0.0, 0.0
    return before / total, 1 - blocked / total


def hidden_rounds(ddp, dist, tj, overlap_step, after_step, batches, steps, rounds) -> dict:
    """t_allreduce, t_overlap, t_after in interleaved rounds (see the module doc), and the
    time blocked in waits per step."""
    times: dict[str, list] = {"allreduce": [], "overlap": [], "after": []}
    waits: dict[str, list] = {"overlap": [], "after": []}
    spans: dict[str, list] = {"overlap": [], "after": []}
    timed_waits()
    bufs = [tj.Tensor(b.alloc()) for b in ddp.reducer.buckets]

    ops = [ddp.reducer.bucket_op(b) for b in ddp.reducer.buckets]     # as the step's buckets

    def allreduce_only(*_):
        works = [dist.all_reduce(t, op, async_op=True) for t, op in zip(bufs, ops)]
        for w in works:
            w.wait()

    fns = {"allreduce": allreduce_only, "overlap": lambda *b: overlap_step(*b).item(),
           "after": lambda *b: after_step(*b).item()}
    for _ in range(rounds):
        for name, fn in fns.items():
            for i in range(steps):
                dist.barrier()
                w0 = WAITED[0]
                INTERVALS.clear()
                t0 = time.perf_counter()
                fn(*batches[i % 4])
                times[name].append(time.perf_counter() - t0)
                if name in waits:
                    waits[name].append(WAITED[0] - w0)
                    spans[name].append(list(INTERVALS))
    med = {k: float(np.median(v)) for k, v in times.items()}
    wmed = {k: float(np.median(v)) for k, v in waits.items()}
    behind_bwd, unblocked = interval_shares(spans["overlap"])
    ar = [d - s for ivs in spans["overlap"] for s, _, d in ivs]
    return {"t_allreduce_ms": 1e3 * med["allreduce"], "t_overlap_ms": 1e3 * med["overlap"],
            "t_after_ms": 1e3 * med["after"],
            "hidden": (med["after"] - med["overlap"]) / med["allreduce"],
            "wait_overlap_ms": 1e3 * wmed["overlap"], "wait_after_ms": 1e3 * wmed["after"],
            "hidden_waits": 1 - wmed["overlap"] / wmed["after"] if wmed["after"] else 0.0,
            "hidden_behind_backward": behind_bwd, "hidden_unblocked": unblocked,
            "allreduce_span_ms": 1e3 * sum(ar) / max(1, len(spans["overlap"])),
            "after_behind_backward": interval_shares(spans["after"])[0]}


def check_cost(dist, tj, rounds) -> dict:
    """A small synchronous all_reduce with and without the cross-rank signature check
    (tracejit/distributed/sigcheck.py), interleaved."""
    from tracejit.distributed.group import current
    pg = current()
    x = tj.tensor(np.ones(4, np.float32))
    res: dict[bool, list] = {True: [], False: []}
    for _ in range(rounds * 4):
        for on in (True, False):
            pg.check = on                   # every rank flips it at the same point
            dist.barrier()
            for _ in range(100):            # per call: a descheduled peer hits single calls
                t0 = time.perf_counter()
                dist.all_reduce(x)
                res[on].append(time.perf_counter() - t0)
    pg.check = True
    return {"small_allreduce_us_checked": 1e6 * float(np.median(res[True])),
            "small_allreduce_us_unchecked": 1e6 * float(np.median(res[False]))}


# more mpiexec arguments for every launch (--mpiexec-args), e.g. "--bind-to none"
MPIEXEC_ARGS: list[str] = []


def command(config: str, mode: str, nproc: int, steps: int, rounds: int, cache: str,
            cap_mb: float, hidden: bool = True, extra: list | None = None) -> tuple:
    from tracejit.distributed import run as launcher
    cmd, env = launcher.build(nproc, [os.path.abspath(__file__), "--worker", mode, "--config",
                                      config, "--steps", str(steps), "--rounds", str(rounds),
                                      "--bucket-cap-mb", str(cap_mb)]
                              + ([] if hidden else ["--no-hidden"]) + (extra or []),
                              launcher.find_mpiexec(), MPIEXEC_ARGS, 1800)
    env["TRACEJIT_CACHE_DIR"] = cache
    return cmd, env


def result(what: str, returncode: int, stdout: str, stderr: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if returncode != 0 or not lines:
        raise SystemExit(f"{what} failed:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return json.loads(lines[-1])


def launch(config: str, mode: str, nproc: int, steps: int, rounds: int, cache: str,
           cap_mb: float, hidden: bool = True) -> dict:
    cmd, env = command(config, mode, nproc, steps, rounds, cache, cap_mb, hidden)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1860)
    return result(f"{config} {mode} on {nproc} rank(s)", proc.returncode, proc.stdout,
                  proc.stderr)


def launch_floor(config: str, mode: str, steps: int, rounds: int, cache: str,
                 cap_mb: float) -> list[dict]:
    """The hardware floor: two independent 1-rank processes (no MPI between them) on cores 0
    and 1, as mpiexec binds 2 ranks, their timed steps started together. What they lose
    against one process alone is what sharing the machine (caches, memory bandwidth, the
    other jobs on it) costs, with no communication: the best a 2-rank run can reach."""
    with tempfile.TemporaryDirectory(prefix="tj_bench_floor_") as sync:
        procs = []
        for core in (0, 1):
            cmd, env = command(config, mode, 1, steps, rounds, cache, cap_mb, False,
                               ["--pin", str(core), "--sync-dir", sync])
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        outs = [p.communicate(timeout=1860) for p in procs]
    return [result(f"{config} {mode} floor process {i}", p.returncode, o, e)
            for i, (p, (o, e)) in enumerate(zip(procs, outs))]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", choices=MODES)
    p.add_argument("--config", choices=CONFIGS, default="small")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--bucket-cap-mb", type=float, default=25.0)
    p.add_argument("--repeat", type=int, default=1,
                   help="launch 1 and 2 ranks this many times each, alternating; report the "
                        "median ratio of adjacent pairs")
    p.add_argument("--floor", action="store_true",
                   help="also run two independent 1-rank processes at once (one per core) in "
                        "each repeat: the ratio the machine permits without communication")
    p.add_argument("--mpiexec-args", default="",
                   help="more mpiexec arguments for every launch, e.g. '--bind-to none' (Open "
                        "MPI binds 1 or 2 ranks to one core each: a rank's progress thread "
                        "then shares its core with the rank's own compute thread)")
    p.add_argument("--no-hidden", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--pin", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--sync-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.worker:
        worker(a.config, a.worker, a.steps, a.rounds, a.bucket_cap_mb, not a.no_hidden,
               a.pin, a.sync_dir)
        return 0
    MPIEXEC_ARGS[:] = shlex.split(a.mpiexec_args)
    if a.repeat < 1:
        p.error("--repeat must be at least 1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="tj_bench_dist_") as cache:
        for config in a.configs.split(","):
            for mode in a.modes.split(","):
                pairs, floors = [], []
                for k in range(a.repeat):       # 1, 2, 1, 2, ...: one load change skews a pair
                    one = launch(config, mode, 1, a.steps, a.rounds, cache, a.bucket_cap_mb)
                    two = launch(config, mode, 2, a.steps, a.rounds, cache, a.bucket_cap_mb,
                                 hidden=k == 0)
                    pairs.append((one, two))
                    if a.floor:     # (1, 2, floor), each against the 1-rank launch before it
                        floors.append(launch_floor(config, mode, a.steps, a.rounds, cache,
                                                   a.bucket_cap_mb))
                rows.append((config, mode, pairs, floors))
    print(f"1 thread per rank; {a.steps} steps per variant per round, {a.rounds} interleaved "
          f"rounds; medians; bucket_cap_mb={a.bucket_cap_mb:g}"
          + (f"; {a.repeat} alternating launches of 1 and 2 ranks, median ratio of adjacent "
             f"pairs [range]" if a.repeat > 1 else ""))
    print(f"{'config':<7}{'step':<16}{'params':>8}{'buckets':>8}{'1 rank /s':>11}"
          f"{'2 ranks /s':>11}{'ratio':>8}{'cpu ms 1r':>10}{'cpu ms 2r':>10}"
          f"{'main ms 2r':>11}"
          f"{'allreduce ms':>13}{'overlap ms':>12}{'after ms':>10}{'hidden':>8}"
          f"{'wait ms':>14}{'hidden(waits)':>15}{'span ms':>9}{'before bwd end':>16}"
          f"{'unblocked':>11}")
    out = []
    for config, mode, pairs, floors in rows:
        ratios = [t["samples_per_s"] / o["samples_per_s"] for o, t in pairs]
        ratio = float(np.median(ratios))
        one, two = pairs[0]             # (the hidden-share figures: the first 2-rank launch)

        def med(k: str, i: int) -> float:
            return float(np.median([p[i][k] for p in pairs]))
        label = {"eager": "eager", "model": "compiled model", "whole": "compiled step"}[mode]
        print(f"{config:<7}{label:<16}{one['params'] / 1e6:>7.2f}M{two['buckets']:>8}"
              f"{med('samples_per_s', 0):>11.1f}{med('samples_per_s', 1):>11.1f}"
              f"{ratio:>7.2f}x"
              f"{med('cpu_ms_per_step', 0):>10.1f}{med('cpu_ms_per_step', 1):>10.1f}"
              f"{med('main_cpu_ms_per_step', 1):>11.1f}"
              f"{two['t_allreduce_ms']:>13.2f}{two['t_overlap_ms']:>12.2f}"
              f"{two['t_after_ms']:>10.2f}{100 * two['hidden']:>7.0f}%"
              f"{two['wait_overlap_ms']:>7.2f}/{two['wait_after_ms']:<6.2f}"
              f"{100 * two['hidden_waits']:>14.0f}%{two['allreduce_span_ms']:>9.2f}"
              f"{100 * two['hidden_behind_backward']:>15.0f}%"
              f"{100 * two['hidden_unblocked']:>10.0f}%")
        if len(ratios) > 1:
            print(f"{'':<23}ratios of the {len(ratios)} pairs: "
                  + ", ".join(f"{r:.2f}x" for r in ratios)
                  + f" [{min(ratios):.2f}-{max(ratios):.2f}]")
        entry = {"config": config, "mode": mode, "one": one, "two": two, "ratio": ratio,
                 "ratios": ratios, "pairs": pairs}
        if floors:
            fr = [sum(f["samples_per_s"] for f in fl) / o["samples_per_s"]
                  for (o, _), fl in zip(pairs, floors)]
            fcpu = float(np.median([f["cpu_ms_per_step"] for fl in floors for f in fl]))
            print(f"{'':<23}hardware floor (two independent 1-rank processes at once, one per "
                  f"core): {float(np.median(fr)):.2f}x one alone [" +
                  ", ".join(f"{r:.2f}x" for r in fr) + f"], cpu ms/step {fcpu:.1f}; 2 ranks "
                  f"reach {ratio / float(np.median(fr)):.0%} of the floor's ratio")
            entry.update(floor_ratio=float(np.median(fr)), floor_ratios=fr, floor_cpu_ms=fcpu,
                         floors=floors)
        out.append(entry)
    c = rows[0][2][0][1]
    print(f"signature check of every collective (f32[4] all_reduce, 2 ranks): "
          f"{c['small_allreduce_us_checked']:.1f} us checked, "
          f"{c['small_allreduce_us_unchecked']:.1f} us unchecked")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
