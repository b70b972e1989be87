"""Scratch memory shared between executables (runtime/buffers.py's per-thread arena), calls
from several threads at once, and what `.lower(...).memory` reports (pinned text; the
residuals saved for backward, exactly)."""
from __future__ import annotations

import threading

import numpy as np

import tracejit as tj
from tracejit.runtime import buffers


def _chain(n: int):
    def f(a):
        for _ in range(n):
            a = tj.tanh(a @ a) * 0.5
        return a.sum(axis=1)
    return f


def _chain_ref(x, n):
    for _ in range(n):
        x = np.tanh(x @ x) * 0.5
    return x.sum(axis=1)


def test_executables_share_one_arena_per_thread():
    small, big = tj.compile(_chain(3)), tj.compile(_chain(4))
    xs, xb = np.full((8, 8), 0.1), np.full((32, 32), 0.05)
    out = {}

    def body():
        buffers.release_scratch()
        out["s1"] = small(tj.tensor(xs)).numpy()
        out["a1"] = buffers.arena_bytes()
        out["b"] = big(tj.tensor(xb)).numpy()
        out["a2"] = buffers.arena_bytes()
        out["s2"] = small(tj.tensor(xs)).numpy()        # runs in the big arena
        out["a3"] = buffers.arena_bytes()
    t = threading.Thread(target=body)        # a fresh thread: a fresh arena
    t.start()
    t.join()
    need_s = small.lower(tj.tensor(xs))._entry.exe.scratch_bytes
    need_b = big.lower(tj.tensor(xb))._entry.exe.scratch_bytes
    assert 0 < need_s < need_b
    assert out["a1"] == need_s and out["a2"] == need_b and out["a3"] == need_b
    np.testing.assert_allclose(out["s1"], _chain_ref(xs, 3), rtol=1e-12)
    np.testing.assert_allclose(out["s2"], _chain_ref(xs, 3), rtol=1e-12)
    np.testing.assert_allclose(out["b"], _chain_ref(xb, 4), rtol=1e-12)
    # an executable keeps no intermediate between calls
    exe = small.lower(tj.tensor(xs))._entry.exe
    for fr in exe._frames:
        assert all(fr.arrays[s] is None for s, *_ in exe.scratch_layout)


def test_concurrent_calls_from_threads():
    fns = [tj.compile(_chain(n)) for n in (2, 3, 5)]
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((n, n)) * 0.3 for n in (16, 24, 40)]
    wants = [_chain_ref(x, n) for x, n in zip(inputs, (2, 3, 5))]
    errors = []
    barrier = threading.Barrier(4)

    def body(k):
        try:
            barrier.wait()
            for i in range(30):
                j = (i + k) % 3
                got = fns[j](tj.tensor(inputs[j])).numpy()
                if not np.allclose(got, wants[j], rtol=1e-12, atol=0):
                    errors.append((k, i, j))
        except Exception as e:          # noqa: BLE001 - reported below
            errors.append(e)
    ts = [threading.Thread(target=body, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []


def test_reentered_arena_is_private():
    buffers.release_scratch()
    outer = buffers.take_arena(256)
    inner = buffers.take_arena(128)          # e.g. an extern primitive calling compiled code
    assert inner is not outer and inner.block.ctypes.data != outer.block.ctypes.data
    buffers.release_arena(inner)
    buffers.release_arena(outer)
    again = buffers.take_arena(64)
    assert again is outer                    # the thread's arena, free again
    buffers.release_arena(again)


def test_memory_text_pinned():
    def f(x, w):
        h = tj.tanh(x @ w)
        return (h @ w.T * h.sum()).sum(axis=1)
    x, w = np.ones((2, 3), np.float32), np.ones((3, 3), np.float32)
    text = tj.compile(f).lower(tj.tensor(x), tj.tensor(w)).memory
    line = f.__code__.co_firstlineno
    here = f"{__name__.rsplit('.', 1)[-1]}.py"
    assert text == "\n".join([
        "memory plan: peak 192 B of scratch for 4 intermediates (256 B one buffer each; "
        "shared by lifetime); new outputs 8 B per call; constants 0 B",
        "  slot 4 %0 f32[2,3]: 24 B at offset 0, live from call 0 to call 1",
        "  slot 6 %3 f32[2,3]: 24 B at offset 0, live from call 2 to call 4",
        "  slot 5 %1 f32[2,3]: 24 B at offset 64, live from call 1 to call 3",
        "  slot 7 %4 f32[]: 4 B at offset 128, live from call 3 to call 4",
        "saved for backward (gradients of %x, %w): 5 residuals, 112 B",
        f"  r0 f32[2,3] 24 B: matmul in the forward at {here}:{line + 1}; "
        "the backward reads it in tanh",
        "  r1 f32[3,3] 36 B: input %w; the backward reads it in transpose, matmul",
        f"  r2 f32[] 4 B: sum in the forward at {here}:{line + 2}; "
        "the backward reads it in broadcast",
        f"  r3 f32[2,3] 24 B: matmul in the forward at {here}:{line + 2}; "
        "the backward reads it in mul",
        "  r4 f32[2,3] 24 B: input %x; the backward reads it in transpose",
    ])
