"""dist_bucket_start/wait (a compiled DDP step's buckets) on a GPU with real NCCL in a world of
1: the CUDA backend runs them as extern steps (the start concatenates the pieces on the device,
the wait's array is kept as the result), against NumPy. Marked `gpu`; skipped cleanly without
CuPy and a GPU (not yet run on one)."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.distributed import ReduceOp, traced

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")]


def test_bucket_start_and_wait_on_gpu(nccl_world_of_one):
    @tj.compile
    def f(x, y):
        a, b = x * 2, y + 1
        t = traced.traced_bucket_start([a, b], ReduceOp.AVG)
        w = traced.traced_bucket_wait([a, b], t, ReduceOp.AVG)
        return w * 3, b * w.sum()

    x, y = np.arange(6.0).reshape(2, 3), np.arange(4.0) - 1
    w, c = f(tj.tensor(x, device="cuda"), tj.tensor(y, device="cuda"))
    want = np.concatenate([(x * 2).ravel(), y + 1])
    np.testing.assert_allclose(w.to("cpu").numpy(), 3 * want)
    np.testing.assert_allclose(c.to("cpu").numpy(), (y + 1) * want.sum())
