"""Fusion computes a 0-d expression with transcendental work once, in a scalar kernel, when a
larger loop reads it (not once per element); cheap scalar arithmetic still fuses."""
import numpy as np

import tracejit as tj
from tracejit.codegen.fusion import plan
from tracejit.ir.interpret import interpret


def _loops(f, *args):
    low = f.lower(*args)
    return low, plan(low.graph).kernels


def test_scalar_pow_is_computed_once_not_per_element():
    def f(x, beta, t):
        bc = 1 - beta ** t                       # as an optimizer's bias correction
        return x / tj.sqrt(bc)

    cf = tj.compile(f)
    x = np.linspace(-1, 1, 4096).reshape(64, 64)
    low, kernels = _loops(cf, x, 0.999, 3.0)
    scalar = [k for k in kernels if k.shape == ()]
    big = [k for k in kernels if k.shape == (64, 64)]
    assert len(scalar) == 1 and len(big) == 1
    assert any(op.prim.name == "pow" for op in scalar[0].ops)
    assert not any(op.prim.name in ("pow", "sqrt") for op in big[0].ops)
    want = x / np.sqrt(1 - 0.999 ** 3.0)
    np.testing.assert_allclose(cf(x, 0.999, 3.0).numpy(), want, rtol=1e-15)
    (ref,) = interpret(low.graph, [x, np.float64(0.999), np.float64(3.0)])
    np.testing.assert_allclose(ref, want, rtol=1e-15)


def test_cheap_scalar_arithmetic_still_fuses():
    cf = tj.compile(lambda x, a, b: x * (1 - a * b) + a)
    _, kernels = _loops(cf, np.ones((8, 8)), 0.5, 0.25)
    assert len(kernels) == 1
    np.testing.assert_allclose(cf(np.ones((8, 8)), 0.5, 0.25).numpy(), np.full((8, 8), 1.375))


def test_zero_size_and_one_element_loops():
    cf = tj.compile(lambda x, t: x * tj.exp(t * 0.5))
    for shape in [(0, 3), (1,), (1, 1)]:
        x = np.ones(shape)
        np.testing.assert_allclose(cf(x, 2.0).numpy(), x * np.exp(1.0), rtol=1e-15)


def test_loops_reading_a_hoisted_scalar_still_merge_with_their_siblings():
    def f(m, g, beta, t):
        m2 = m * beta + g                          # does not read the scalar kernel
        return m2, m2 / (1 - beta ** t)            # reads it

    cf = tj.compile(f)
    m, g = np.ones((32, 32)), np.full((32, 32), 2.0)
    low, kernels = _loops(cf, m, g, 0.9, 2.0)
    assert [k.shape for k in kernels] == [(), (32, 32)]
    a, b = cf(m, g, 0.9, 2.0)
    np.testing.assert_allclose(a.numpy(), np.full((32, 32), 2.9))
    np.testing.assert_allclose(b.numpy(), np.full((32, 32), 2.9 / (1 - 0.81)), rtol=1e-15)
