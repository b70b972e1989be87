"""Memory of the eager compiled-kernel path: every executable draws its large outputs from one
process-wide pool (runtime/buffers.shared_pool), so the free blocks kept for reuse do not grow
with the number of distinct eager kernels that have run."""
import gc

import numpy as np

import tracejit as tj
from tracejit.runtime import buffers
from tracejit.runtime import eager_kernels as ek


def _free_blocks(nbytes: int) -> int:
    """Free pooled blocks of exactly nbytes, over every pool in the process."""
    return sum(len(p._free.get(nbytes, ())) for p in list(buffers._POOLS))


def test_distinct_eager_kernels_reuse_one_block(monkeypatch):
    monkeypatch.setattr(ek, "MIN_ELEMENTS", 0)
    ek.enable(True)
    try:
        # a size no other test uses, large enough to be pooled
        n = buffers.POOL_MIN_BYTES // 4 + 1234
        nbytes = n * 4
        rng = np.random.default_rng(0)
        a = rng.standard_normal(n).astype(np.float32)
        b = (rng.random(n) + 0.5).astype(np.float32)
        ta, tb = tj.tensor(a), tj.tensor(b)
        before = ek.stats["calls"]
        ops = [(lambda x, y: x * y, np.multiply), (lambda x, y: x + y, np.add),
               (lambda x, y: x - y, np.subtract), (lambda x, y: x / y, np.divide),
               (tj.maximum, np.maximum), (lambda x, y: tj.exp(x), lambda x, y: np.exp(x))]
        for f, ref in ops:
            got = f(ta, tb)
            np.testing.assert_allclose(got.numpy(), ref(a, b), rtol=1e-6)
            del got
            gc.collect()
        assert ek.stats["calls"] >= before + len(ops), "the kernel path was not taken"
        # one op at a time was alive: one block serves all six kernels (with a pool per
        # executable, each kernel kept a block of its own)
        assert _free_blocks(nbytes) == 1
        assert buffers.shared_pool().free_bytes() <= buffers.POOL_MAX_BYTES
    finally:
        ek.enable(True)


def test_shared_pool_outputs_stay_owned_by_the_caller(monkeypatch):
    """A block goes back to the pool only when its array dies: results of two kernels that
    are both alive never share memory."""
    monkeypatch.setattr(ek, "MIN_ELEMENTS", 0)
    ek.enable(True)
    n = buffers.POOL_MIN_BYTES // 4 + 4321
    rng = np.random.default_rng(1)
    a = rng.standard_normal(n).astype(np.float32)
    ta = tj.tensor(a)
    x = ta * 2.0
    y = ta + 1.0
    z = -ta
    assert not np.shares_memory(x.numpy(), y.numpy())
    assert not np.shares_memory(y.numpy(), z.numpy())
    np.testing.assert_array_equal(x.numpy(), a * 2)
    np.testing.assert_array_equal(y.numpy(), a + 1)
    np.testing.assert_array_equal(z.numpy(), -a)
