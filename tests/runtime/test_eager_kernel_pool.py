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


# -- the measured crossover ---------------------------------------------------------------------
def test_ops_whose_kernel_lost_stay_numpy_at_every_size(monkeypatch):
    """The crossover table decides: an op missing from it (its kernel never beat NumPy) is
    NumPy's at any size; an op in it runs as a kernel from its crossover on."""
    table = {"exp": 1 << 16}
    monkeypatch.setattr(ek, "CROSSOVER", {1: table, 2: table})
    ek.enable(True)
    try:
        n = 1 << 20
        rng = np.random.default_rng(2)
        a = rng.standard_normal(n).astype(np.float32)
        before = ek.stats["calls"]
        got = tj.tensor(a) * tj.tensor(a) + tj.tensor(a)
        np.testing.assert_array_equal(got.numpy(), a * a + a)
        assert ek.stats["calls"] == before            # NumPy ran both
        small = a[: (1 << 16) - 1]
        np.testing.assert_allclose(tj.exp(tj.tensor(small)).numpy(), np.exp(small), rtol=1e-6)
        assert ek.stats["calls"] == before            # below the crossover
        np.testing.assert_allclose(tj.exp(tj.tensor(a)).numpy(), np.exp(a), rtol=1e-6)
        assert ek.stats["calls"] == before + 1
    finally:
        monkeypatch.undo()
        ek.enable(True)


def test_crossover_depends_on_the_thread_count(monkeypatch):
    monkeypatch.setattr(ek, "CROSSOVER", {1: {"exp": 1 << 16, "max": 1 << 15},
                                          2: {"exp": 1 << 20}})
    assert ek.crossover("exp", 1) == 1 << 16 and ek.crossover("max", 1) == 1 << 15
    assert ek.crossover("exp", 2) == 1 << 20 and ek.crossover("max", 2) is None
    assert ek.crossover("exp", 64) == 1 << 20      # more threads: the largest count measured
    assert ek.crossover("tanh", 1) is None         # never a kernel: not in KERNEL_OPS
    monkeypatch.setattr(ek, "MIN_ELEMENTS", 1000)   # TRACEJIT_EAGER_KERNEL_MIN: one for all
    assert ek.crossover("add", 1) == 1000 and ek.crossover("tanh", 1) is None


def test_measured_table_names_kernel_ops():
    for threads, table in ek.CROSSOVER.items():
        assert threads >= 1
        for name, least in table.items():
            assert name in ek.KERNEL_OPS or name in ("sum", "max", "min")
            assert least > 0 and least & (least - 1) == 0     # a measured size: 2^k
