"""Large (pooled) outputs of compiled functions start on a cache line, and the pool's
ownership rule still holds for them: the memory is reused only once the output and every view
of it are gone. Per-example gradients (compile(vmap(grad))) write such outputs."""
import gc

import numpy as np

import tracejit as tj
from tracejit.runtime import buffers

LINE = 64          # bytes in a cache line


def test_pooled_outputs_start_on_a_cache_line():
    pool = buffers.OutputPool()
    n = buffers.POOL_MIN_BYTES // 4 + 3            # pooled; an odd size
    outs = [pool.empty((n,), np.float32) for _ in range(3)]
    outs.append(pool.empty((2, n // 2 + 5), np.float64))
    for o in outs:
        assert o.ctypes.data % LINE == 0
    del outs
    gc.collect()
    again = pool.empty((n,), np.float32)           # a block back from the free list
    assert again.ctypes.data % LINE == 0


def test_a_view_keeps_an_aligned_block_out_of_the_pool():
    pool = buffers.OutputPool()
    n = buffers.POOL_MIN_BYTES // 4 + 17
    a = pool.empty((n,), np.float32)
    a[:] = 3.0
    v = a[5:].reshape(-1)
    del a
    gc.collect()
    assert pool.free_bytes() == 0 and pool.live() == 1
    b = pool.empty((n,), np.float32)               # must not be v's memory
    b[:] = -1.0
    assert not np.shares_memory(b, v)
    np.testing.assert_array_equal(v, 3.0)
    del v, b
    gc.collect()
    assert pool.live() == 0 and pool.free_bytes() == 2 * n * 4     # both blocks back


def test_per_example_gradients_are_aligned_and_match_a_loop():
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((64, 128)).astype(np.float32) * 0.1
    b1 = np.zeros(128, np.float32)
    w2 = rng.standard_normal((128, 10)).astype(np.float32) * 0.1
    x = rng.standard_normal((256, 64)).astype(np.float32)
    y = rng.standard_normal((256, 10)).astype(np.float32)

    def loss(params, xi, yi):
        a, b, c = params
        return ((tj.tanh(xi @ a + b) @ c - yi) ** 2).mean()

    per_example = tj.compile(tj.vmap(tj.grad(loss), in_axes=(None, 0, 0)))
    one = tj.grad(loss)
    for _ in range(2):                            # the second call reuses the pooled block
        got = per_example((w1, b1, w2), x, y)
        assert got[0].shape == (256, 64, 128)
        assert got[0].numpy().ctypes.data % LINE == 0
        for i in (0, 1, 128, 255):
            want = one((w1, b1, w2), x[i], y[i])
            for g, w in zip(got, want):
                np.testing.assert_allclose(g.numpy()[i], w.numpy(), rtol=1e-4, atol=1e-6)
        del got
        gc.collect()
