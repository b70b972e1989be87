"""Tiny kernels (a scalar kernel, or elements x ops at most codegen.llvm_program.TINY_KERNEL,
a transcendental op counting SLOW_OP) are built at O0 with LLVM's fast code generator, for
compile time, as long as a program's O0 work stays within 1/O0_BUDGET of its estimated work
(so a GEMM-heavy step has room, a program of small kernels has little); the rest at O2. The
decision is pinned here, and the O0 code is checked against the reference interpreter and
against the same graphs built at O2 on random programs: every op family, reductions with their
float64 accumulators, integers, casts, empty and one-element shapes, broadcasts,
non-contiguous inputs and gradients."""
from __future__ import annotations

import re

import numpy as np
import pytest

import tracejit as tj
from tracejit.codegen import llvm_program
from tracejit.runtime import llvm_jit


def _levels(program: str) -> list[str]:
    return re.findall(r"-> tj_[0-9a-f]{32} (O\d) over", program)


M = np.ones((256, 256), np.float32)      # a GEMM in the program: room in the O0 budget


def test_tiny_kernels_are_built_at_o0_and_the_rest_at_o2(monkeypatch):
    monkeypatch.setenv("TRACEJIT_NUM_THREADS", "1")
    cheap = tj.compile(lambda x, m: (x * 2.0 + 1.0, m @ m))
    assert _levels(cheap.lower(np.ones(256, np.float32), M).program) == ["O0"]
    assert _levels(cheap.lower(np.ones(8192, np.float32), M).program) == ["O2"]
    assert "(O0): kernels k0\n" in cheap.lower(np.ones(256, np.float32), M).llvm_ir
    # a scalar kernel is tiny however many ops it has; transcendental work on a few hundred
    # elements is not (an LSTM's gates)
    assert _levels(tj.compile(lambda x, m: (tj.exp(tj.tanh(x) + 1.0) * 3.0, m @ m)).lower(
        np.float32(3.0), M).program) == ["O0"]
    assert _levels(tj.compile(lambda x, m: (tj.tanh(x) * 3.0 - x, m @ m)).lower(
        np.ones((8, 64), np.float32), M).program) == ["O2"]
    # a concatenation costs a select per piece and element
    cat = tj.compile(lambda m, *xs: (tj.cat(xs, 0) * 1.0, m @ m))
    assert _levels(cat.lower(M, *[np.ones((8, 16), np.float32)] * 2).program) == ["O0"]
    assert _levels(cat.lower(M, *[np.ones((8, 16), np.float32)] * 40).program) == ["O2"]
    # O0 modules get the fast code generator as well, O2 ones the full one
    assert llvm_jit.codegen_level(0) == 0 and llvm_jit.codegen_level(2) == 3


def test_the_o0_budget_follows_the_programs_work(monkeypatch):
    """The same tiny kernel is O0 beside a GEMM and O2 alone (at O0 it would be a large part of
    the call); of several, the smallest fill the budget first."""
    monkeypatch.setenv("TRACEJIT_NUM_THREADS", "1")
    x = np.ones(256, np.float32)
    assert _levels(tj.compile(lambda x: x * 2.0 + 1.0).lower(x).program) == ["O2"]
    m = np.ones((32, 32), np.float32)           # room for the 4-element kernel, not the other
    two = tj.compile(lambda a, b, m: (a * 2.0 + 1.0, b * 2.0 + 1.0, m @ m))
    prog = two.lower(np.ones(4, np.float32), np.ones(1024, np.float32), m).program
    assert re.findall(r"(k\d+) -> tj_[0-9a-f]{32} (O\d)", prog) == [("k0", "O0"), ("k1", "O2")]


def test_the_same_loops_at_two_levels_are_two_modules(monkeypatch):
    """A kernel whose rows are its parallel range has the same text for 4 and for 32 rows; on
    512 elements it is tiny and on 4096 it is not: two modules, each right."""
    monkeypatch.setenv("TRACEJIT_NUM_THREADS", "1")

    def f(a, b, m):
        return a * 3.0 - a * a, b * 3.0 - b * b, m @ m
    a = np.linspace(-2, 2, 512, dtype=np.float32).reshape(4, 128)
    b = np.linspace(-3, 3, 4096, dtype=np.float32).reshape(32, 128)
    cf = tj.compile(f)
    prog = cf.lower(a, b, M).program
    symbols = re.findall(r"-> (tj_[0-9a-f]{32}) (O\d)", prog)
    assert sorted(lv for _, lv in symbols) == ["O0", "O2"]
    assert len({s for s, _ in symbols}) == 2
    ra, rb, _ = cf(a, b, M)
    np.testing.assert_allclose(ra.numpy(), a * 3 - a * a, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rb.numpy(), b * 3 - b * b, rtol=1e-6, atol=1e-6)


def _program(x, y, k, w):
    """One of every op family that a kernel lowers, on tiny shapes."""
    s = tj.sin(x) * tj.cos(y) + tj.exp(-x * x) - tj.log(tj.abs(y) + 1.5)
    t = tj.tanh(s) + tj.erf(x) + tj.sqrt(tj.abs(x)) + (tj.abs(y) + 0.5) ** x
    rows = tj.softmax(t, -1).sum(0) + t.max(1, keepdims=True).values.sum()
    m = tj.where(x > y, x, y * 2.0).mean(0)
    ints = (k * 3 - 1).sum() + (k % 5).max()
    casts = (x * 100.0).to(tj.int32).to(tj.float32) + (y > 0).to(tj.float32)
    half = (x * 0.25).to(tj.float16).to(tj.float32)
    dbl = (w * w).sum(0) + tj.exp(w).mean()
    big = tj.tensor(np.ones((256, 256), np.float32))
    return rows, m, ints, casts, half, dbl, t.T * 1.0, (big @ big).sum()


SHAPES = [(1, 1), (2, 3), (3, 1), (7, 5), (8, 64), (16, 32)]


def _inputs(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.standard_normal((shape[1], shape[0])).astype(np.float32).T   # not contiguous
    k = rng.integers(-50, 50, shape).astype(np.int64)
    w = rng.standard_normal(shape)                                         # float64
    return x, y, k, w


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_o0_kernels_match_the_interpreter_and_o2(shape, monkeypatch):
    monkeypatch.setenv("TRACEJIT_NUM_THREADS", "1")
    args = _inputs(shape, sum(shape))
    tiny = tj.compile(_program)
    ref = tj.compile(_program, backend="interpreter")(*args)
    got = tiny(*args)
    assert "O0" in _levels(tiny.lower(*args).program)
    monkeypatch.setattr(llvm_program, "speed_level",            # the same graph, all at O2
                        lambda k: llvm_program.SPEED_LEVEL)
    full = tj.compile(_program)
    assert "O0" not in _levels(full.lower(*args).program)
    o2 = full(*args)
    for g, r, o in zip(got, ref, o2):
        assert g.dtype == r.dtype and g.shape == r.shape
        if g.dtype in (tj.int32, tj.int64):
            np.testing.assert_array_equal(g.numpy(), r.numpy())
            np.testing.assert_array_equal(g.numpy(), o.numpy())
        else:
            np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=3e-6, atol=3e-6)
            np.testing.assert_allclose(g.numpy(), o.numpy(), rtol=3e-6, atol=3e-6)


@pytest.mark.parametrize("shape", [(0,), (0, 4), (1,), (5,)], ids=str)
def test_o0_kernels_on_empty_and_single_element_shapes(shape):
    x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) - 1.5
    f = tj.compile(lambda a: (tj.exp(a) + a.sum(), a.max(-1).values if a.shape[-1] else a.sum(-1)))
    e, m = f(x)
    np.testing.assert_allclose(e.numpy(), np.exp(x) + x.sum(), rtol=1e-6)
    want = x.max(-1) if x.shape[-1] else x.sum(-1)
    np.testing.assert_allclose(m.numpy(), want, rtol=1e-6)


def test_gradients_through_o0_kernels_match_float64_differences():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4))
    w = rng.standard_normal((4, 2))

    def loss(x, w):
        return (tj.tanh(x @ w) ** 2).sum() + tj.exp(x * 0.1).mean()
    gx, gw = tj.grad(tj.compile(loss), argnums=(0, 1))(x, w)

    def num(f, a, eps=1e-6):
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            d = np.zeros_like(a)
            d[i] = eps
            g[i] = (f(a + d) - f(a - d)) / (2 * eps)
        return g
    ref = lambda x, w: (np.tanh(x @ w) ** 2).sum() + np.exp(x * 0.1).mean()   # noqa: E731
    np.testing.assert_allclose(gx.numpy(), num(lambda a: ref(a, w), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gw.numpy(), num(lambda a: ref(x, a), w), rtol=1e-6, atol=1e-8)


def test_a_few_thousand_element_ops_are_tiny_beside_a_large_gemm(monkeypatch):
    """Elements x ops up to TINY_KERNEL (32768): 512 elements through 12 ops (their constants count too), beside a
    512^3 GEMM, is an O0 module; the same kernel beside a small GEMM stays O2 (the budget)."""
    monkeypatch.setenv("TRACEJIT_NUM_THREADS", "1")

    def f(a, x):
        y = x
        for i in range(8):
            y = y * 1.5 + 0.25 if i % 2 else y - 0.5
        return a @ a, y
    x = np.linspace(-1, 1, 512, dtype=np.float32)
    cf = tj.compile(f)
    big = np.full((512, 512), 0.5, np.float32)
    assert _levels(cf.lower(big, x).program) == ["O0"]
    assert _levels(cf.lower(M, x).program) == ["O2"]
    want = x.astype(np.float64)
    for i in range(8):
        want = want * 1.5 + 0.25 if i % 2 else want - 0.5
    np.testing.assert_allclose(cf(big, x)[1].numpy(), want, rtol=1e-6, atol=1e-6)
