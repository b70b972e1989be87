"""A value that fusion recomputes in several kernels is bit-identical in each: no FMA
contraction in generated code (LLVM `contract`, NVRTC --fmad). The max gradient compares a
recomputed input with the stored maximum and divides by the number of ties: a last-bit
difference made that count 0 and the gradient NaN in the last row (the scalar tail) of a rows
kernel."""
from __future__ import annotations

import numpy as np

import tracejit as tj
from randgraph import build, inputs

PROG = [("b", "bcast_col", (0, 0)), ("b", "add", (0, 3)), ("b", "bcast_col", (3, 4)),
        ("b", "bcast_row", (0, 0))]


def test_max_gradient_through_a_recomputed_product_is_finite_and_exact():
    f = build(PROG)
    xs = inputs(1, np.float64)
    loss = lambda x, y, z: f(x, y, z)[1].sum()   # noqa: E731
    got = tj.grad(tj.compile(loss, backend="llvm"), argnums=(0, 1, 2))(*xs)
    want = tj.grad(tj.compile(loss, backend="interpreter"), argnums=(0, 1, 2))(*xs)
    for g, w in zip(got, want):
        assert np.isfinite(g.numpy()).all()
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-11, atol=1e-11)


def test_generated_llvm_has_no_contraction():
    x = np.ones(4096, np.float64)
    ir = tj.compile(lambda a, b: a * b + 1.0).lower(x, x).llvm_ir
    assert " contract " not in ir.replace("reassoc contract", "")
