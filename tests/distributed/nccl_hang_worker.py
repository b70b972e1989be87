"""A collective that never completes on the GPU (fake NCCL with HANG): the NCCL watchdog must
end the process with an error naming the operation, although the host never waits for it."""
import sys
import time

import numpy as np

import fakenccl

sys.modules["cupy"] = fakenccl.module(devices=1)
fakenccl.HANG = True

import tracejit as tj  # noqa: E402
import tracejit.distributed as dist  # noqa: E402

dist.init_process_group("nccl", timeout=2)
t = tj.tensor(np.ones(4, np.float32), device="cuda")
dist.all_reduce(t, async_op=True).wait()      # orders the stream; the host goes on
time.sleep(60)
print("unreachable: no watchdog", flush=True)
