"""Every primitive and composite: gradients against central finite differences in float64,
second derivatives where smooth, and the IR transform agreeing with the eager engine."""
import numpy as np
import pytest

import tracejit as tj
from cases import CASES, NO_HESSIAN, float_positions, make_inputs
from conftest import assert_close


def _leaves(xs, specs):
    pos = float_positions(specs)
    return [tj.tensor(x, requires_grad=i in pos) for i, x in enumerate(xs)], pos


def _scalarize(fn):
    """sum(fn(...) * fixed weights): a scalar whose gradient exercises every output element."""
    def f(*args):
        out = fn(*args)
        w = np.cos(np.arange(out.numel(), dtype=np.float64)).reshape(out.shape) + 1.5
        return (out * tj.tensor(w.astype(out.dtype.np))).sum()
    return f


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradcheck(name):
    fn, _, specs = CASES[name]
    xs, _ = _leaves(make_inputs(specs, np.float64, seed=2), specs)
    if name == "cast":
        return  # cast to float32 is not checkable in float64 (covered by test_cast_gradient)
    assert tj.autograd.gradcheck(_scalarize(fn), xs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_cast_gradient():
    x = tj.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (tj.cast(x, tj.float32) * 3).sum()
    y.backward()
    assert x.grad.dtype is tj.float64
    assert_close(x.grad, np.array([3.0, 3.0]))


@pytest.mark.parametrize("name", sorted(n for n in CASES if n not in NO_HESSIAN and n != "cast"))
def test_second_derivative(name):
    fn, _, specs = CASES[name]
    xs, pos = _leaves(make_inputs(specs, np.float64, seed=3), specs)
    f = _scalarize(fn)

    def first(*args):
        gs = tj.autograd.grad(f(*args), [args[i] for i in pos], create_graph=True)
        # <grad, x> involves the Hessian and stays defined when the gradient is constant
        return tj.stack([(g * args[i] * (k + 1.0)).sum() for k, (i, g) in
                         enumerate(zip(pos, gs))]).sum()
    assert tj.autograd.gradcheck(first, xs, eps=1e-5, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("name", sorted(n for n in CASES if n != "cast"))
def test_ir_transform_matches_eager(name):
    fn, _, specs = CASES[name]
    xs = make_inputs(specs, np.float64, seed=4)
    pos = float_positions(specs)
    f = _scalarize(fn)
    leaves, _ = _leaves(xs, specs)
    eager = tj.autograd.grad(f(*leaves), [leaves[i] for i in pos], allow_unused=True)
    compiled = tj.grad(tj.compile(f), argnums=tuple(pos))(*xs)
    for a, b, i in zip(compiled, eager, pos):
        assert_close(a, b if b is not None else np.zeros_like(xs[i]), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(n for n in CASES if n not in NO_HESSIAN and n != "cast"))
def test_compiled_hessian_matches_eager(name):
    fn, _, specs = CASES[name]
    if len(specs) != 1:
        return
    x = make_inputs(specs, np.float64, seed=5)[0]
    f = _scalarize(fn)
    h_eager = tj.hessian(f)(tj.tensor(x))
    h_comp = tj.hessian(tj.compile(f))(x)
    assert_close(h_comp, h_eager, rtol=1e-8, atol=1e-8)
    assert h_comp.shape == x.shape + x.shape


def test_subgradients_at_kinks():
    x = tj.tensor(np.array([0.0, 0.0, 1.0]), requires_grad=True)
    tj.relu(x).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0]          # relu'(0) = 0
    x.grad = None
    tj.abs(x).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0]          # abs'(0) = 0
    a = tj.tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = tj.tensor(np.array([1.0, 1.0]), requires_grad=True)
    tj.maximum(a, b).sum().backward()
    assert a.grad.tolist() == [0.5, 1.0] and b.grad.tolist() == [0.5, 0.0]   # ties split
    m = tj.tensor(np.array([3.0, 3.0, 1.0]), requires_grad=True)
    m.max().backward()
    assert m.grad.tolist() == [0.5, 0.5, 0.0]          # max ties split evenly
    s = tj.tensor(np.array([0.0]), requires_grad=True)
    tj.sqrt(s).sum().backward()
    assert np.isinf(s.grad.item())                     # sqrt'(0) = inf, as PyTorch
    z = tj.tensor(np.array([0.0]), requires_grad=True)
    (tj.sigmoid(z) + tj.softplus(z)).sum().backward()
    assert z.grad.item() == 0.75                       # smooth composites: exact at 0 too
    c = tj.tensor(np.array([-1.0, 0.5, 1.0]), requires_grad=True)
    tj.clip(c, -1.0, 1.0).sum().backward()
    assert c.grad.tolist() == [1.0, 1.0, 1.0]          # clamp passes at the bounds
