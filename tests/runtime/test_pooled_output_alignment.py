"""Large (pooled) outputs of compiled functions start on a cache line, from 1 MiB they are
pooled, and on Linux their blocks are huge-page aligned and madvised for transparent huge
pages; the pool's ownership rule still holds for them: the memory is reused only once the
output and every view of it are gone. Per-example gradients (compile(vmap(grad))) write such
outputs (8 MiB and 1.3 MiB for the MLP below)."""
import gc
import re
import sys

import numpy as np
import pytest

import tracejit as tj
from tracejit.runtime import buffers

LINE = 64          # bytes in a cache line
HUGE = 2 << 20     # x86-64's transparent huge page
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="transparent huge pages are Linux's (/proc/self/smaps)")


def _vm_flags(addr: int) -> list[str]:
    """The VmFlags of the mapping that holds address addr (/proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
            if m:
                inside = int(m.group(1), 16) <= addr < int(m.group(2), 16)
            elif inside and line.startswith("VmFlags:"):
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {addr:#x}")


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


@linux_only
def test_pooled_blocks_start_on_a_huge_page_and_ask_for_huge_pages():
    pool = buffers.OutputPool()
    for nbytes in (8 << 20, 1300 << 10, (5 << 20) + 12):
        a = pool.empty((nbytes // 4,), np.float32)
        a[:] = 1.0
        assert a.ctypes.data % HUGE == 0, nbytes
        assert "hg" in _vm_flags(a.ctypes.data), nbytes          # madvise(MADV_HUGEPAGE)
        np.testing.assert_array_equal(a[-3:], 1.0)


def test_outputs_from_one_mib_are_pooled():
    f = tj.compile(lambda a, b: a[:, :, None] * b[:, None, :])     # an outer product per row
    rng = np.random.default_rng(3)
    a = rng.standard_normal((256, 128)).astype(np.float32)
    b = rng.standard_normal((256, 10)).astype(np.float32)
    pool = buffers.shared_pool()
    before = pool.live()
    out = f(a, b)                                  # [256, 128, 10] float32: 1.25 MiB
    assert pool.live() == before + 1
    np.testing.assert_array_equal(out.numpy(), a[:, :, None] * b[:, None, :])
    del out
    gc.collect()
    assert pool.live() == before


@linux_only
def test_per_example_gradients_sit_on_huge_pages():
    rng = np.random.default_rng(1)
    params = (rng.standard_normal((64, 128)).astype(np.float32) * 0.1,
              rng.standard_normal((128, 10)).astype(np.float32) * 0.1)
    x = rng.standard_normal((256, 64)).astype(np.float32)

    def loss(p, xi):
        return (tj.tanh(xi @ p[0]) @ p[1]).sum()

    g1, g2 = tj.compile(tj.vmap(tj.grad(loss), in_axes=(None, 0)))(params, x)
    for g in (g1, g2):                             # 8 MiB and 1.25 MiB
        assert g.numpy().ctypes.data % HUGE == 0
        assert "hg" in _vm_flags(g.numpy().ctypes.data)
    h = np.tanh(x @ params[0])
    want2 = h[:, :, None] * np.ones(10, np.float32)
    want1 = x[:, :, None] * ((1 - h * h) * params[1].sum(1))[:, None, :]
    np.testing.assert_allclose(g2.numpy(), want2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g1.numpy(), want1, rtol=1e-4, atol=1e-6)


def test_a_live_output_keeps_its_mapping_through_clear():
    pool = buffers.OutputPool()
    n = (3 << 20) // 4
    a = pool.empty((n,), np.float32)
    a[:] = np.arange(n, dtype=np.float32)
    pool.clear()
    buffers.clear_pools()
    gc.collect()
    np.testing.assert_array_equal(a[::4096], np.arange(0, n, 4096, dtype=np.float32))
    del a
    gc.collect()
    assert pool.free_bytes() == n * 4            # back in the pool once it died


def test_without_huge_pages_blocks_still_start_on_a_cache_line(monkeypatch):
    monkeypatch.setattr(buffers, "_HUGE", False)
    pool = buffers.OutputPool()
    for k in range(4):
        a = pool.empty((buffers.POOL_MIN_BYTES // 4 + 7 + k,), np.float32)
        assert a.ctypes.data % LINE == 0
        a[:] = k
        assert a[-1] == k
