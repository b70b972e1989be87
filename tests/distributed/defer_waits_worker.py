"""Run under mpiexec by test_distributed_defer_waits_ranks.py: a compiled DDP step (AdamW, no
clipping, two buckets) whose program runs bucket 0's updates before it waits for bucket 1
(ir/defer_waits.py): the order in the plan it runs, the order of its collectives at run time,
each all-reduce's interval (Work.started_at, Work.done_at), and the parameters after five
steps on each rank's shard against single-process training on the full batch (float64).
Prints "ok <name>" per passed check."""
import re
import sys
import time

import numpy as np

import tracejit as tj
import tracejit.distributed as dist
from tracejit.distributed import base
from tracejit.ir.prims_collective import RUNNERS
from tracejit.nn.parallel import DistributedDataParallel as DDP

from mse_steps import mse_step

dist.init_process_group(timeout=60)
RANK, WORLD = dist.get_rank(), dist.get_world_size()
ROWS = 4
CAP_MB = 600 / 2 ** 20        # bucket 0: out.*, fc2.* (81 float64); bucket 1: fc1.*


def net():
    tj.manual_seed(11 + RANK)              # DDP broadcasts rank 0's
    return tj.nn.Sequential(tj.nn.Linear(4, 8, dtype=tj.float64), tj.nn.Tanh(),
                            tj.nn.Linear(8, 8, dtype=tj.float64), tj.nn.Tanh(),
                            tj.nn.Linear(8, 1, dtype=tj.float64))


def full_batch(s):
    rng = np.random.default_rng(900 + s)
    return rng.standard_normal((ROWS * WORLD, 4)), rng.standard_normal((ROWS * WORLD, 1))


def mine(a):
    return a[RANK * ROWS:(RANK + 1) * ROWS]


def check_order():
    model, ref = net(), net()
    ddp = DDP(model, bucket_cap_mb=CAP_MB)
    assert [b.names for b in ddp.reducer.buckets] == [["4.bias", "4.weight", "2.bias",
                                                       "2.weight"], ["0.bias", "0.weight"]]
    ref.load_state_dict({k: v.detach().numpy().copy() for k, v in model.state_dict().items()})
    opt = tj.optim.AdamW(ddp.parameters(), lr=0.01, weight_decay=0.1)
    step = tj.compile(mse_step(ddp, opt))
    x, y = full_batch(0)
    # the plan the program runs, step after step: bucket 0's four updates between the waits
    plan = str(step.lower(tj.tensor(mine(x)), tj.tensor(mine(y))).kernels).splitlines()
    waits = [i for i, ln in enumerate(plan) if "ops(dist_bucket_wait)" in ln]
    assert len(waits) == 2, plan
    r0 = re.search(r"out\((%\d+)\)", plan[waits[0]]).group(1)
    readers = [i for i, ln in enumerate(plan) if re.search(rf"in\([^)]*{r0}[,)]", ln)]
    assert len([i for i in readers if waits[0] < i < waits[1]]) == 4, plan

    log, intervals = [], []
    start, wait = RUNNERS["dist_bucket_start"], RUNNERS["dist_bucket_wait"]
    work_wait = base.Work.wait

    def logged_start(flat, pieces, **kw):
        log.append("start")
        return start(flat, pieces, **kw)

    def logged_wait(ticket, pieces, **kw):
        log.append("wait")
        return wait(ticket, pieces, **kw)

    def timed(self, timeout=None):
        fresh = not self._done
        out = work_wait(self, timeout)
        if fresh:
            intervals.append((self.started_at, self.done_at, time.perf_counter()))
        return out
    RUNNERS["dist_bucket_start"], RUNNERS["dist_bucket_wait"] = logged_start, logged_wait
    base.Work.wait = timed
    try:
        for s in range(5):
            x, y = full_batch(s)
            step(tj.tensor(mine(x)), tj.tensor(mine(y)))
    finally:
        RUNNERS["dist_bucket_start"], RUNNERS["dist_bucket_wait"] = start, wait
        base.Work.wait = work_wait
    assert log == ["start", "start", "wait", "wait"] * 5, log
    assert len(intervals) == 10, intervals
    for k in range(0, 10, 2):
        (s0, d0, e0), (s1, d1, e1) = intervals[k:k + 2]
        assert s0 < s1, intervals                  # bucket 0 started first
        assert s0 <= d0 <= e0 and s1 <= d1 <= e1, intervals   # seen complete by its wait's end

    ref_opt = tj.optim.AdamW(ref.parameters(), lr=0.01, weight_decay=0.1)
    for s in range(5):
        x, y = full_batch(s)
        ref_opt.zero_grad()
        ((ref(tj.tensor(x)) - tj.tensor(y)) ** 2).mean().backward()
        ref_opt.step()
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=n)
    print("ok order", flush=True)


CHECKS = {"order": check_order}
for name in sys.argv[1:]:
    CHECKS[name]()
dist.destroy_process_group()
