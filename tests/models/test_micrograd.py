"""micrograd's own test cases (karpathy/micrograd, test/test_engine.py) in micrograd's spelling,
with tracejit tensors in place of micrograd's `Value`: eagerly, through
`tj.grad(tj.compile(...))`, and as a compiled function inside eager autograd; against PyTorch
(as micrograd's tests do) and against float64 central differences."""
import numpy as np
import pytest

import tracejit as tj

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def Value(data):
    """micrograd's scalar, as a float64 0-d tracejit tensor."""
    return tj.tensor(float(data), dtype=tj.float64, requires_grad=True)


def sanity_check(x):
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    return y


def more_ops(a, b):
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    return g


def torch_sanity_check():
    """micrograd's PyTorch half of test_sanity_check, verbatim."""
    x = torch.Tensor([-4.0]).double()
    x.requires_grad = True
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    return x, y


def torch_more_ops():
    """micrograd's PyTorch half of test_more_ops, verbatim."""
    a = torch.Tensor([-4.0]).double()
    b = torch.Tensor([2.0]).double()
    a.requires_grad = True
    b.requires_grad = True
    c = a + b
    d = a * b + b**3
    c = c + c + 1
    c = c + 1 + c + (-a)
    d = d + d * 2 + (b + a).relu()
    d = d + 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g = g + 10.0 / f
    g.backward()
    return a, b, g


@needs_torch
def test_sanity_check():
    x = Value(-4.0)
    y = sanity_check(x)
    y.backward()
    xmg, ymg = x, y
    xpt, ypt = torch_sanity_check()
    # forward pass went well
    assert ymg.data.item() == ypt.data.item()
    # backward pass went well
    assert xmg.grad.item() == xpt.grad.item()


@needs_torch
def test_more_ops():
    a = Value(-4.0)
    b = Value(2.0)
    g = more_ops(a, b)
    g.backward()
    amg, bmg, gmg = a, b, g
    apt, bpt, gpt = torch_more_ops()
    tol = 1e-6
    # forward pass went well
    assert abs(gmg.data.item() - gpt.data.item()) < tol
    # backward pass went well
    assert abs(amg.grad.item() - apt.grad.item()) < tol
    assert abs(bmg.grad.item() - bpt.grad.item()) < tol


def _compiled_grads(fn, args, mode):
    """(value, grads) of fn at args through a compiled function, `mode` being how it is used."""
    compiled = tj.compile(fn)
    if mode == "grad_of_compiled":
        value, grads = tj.value_and_grad(compiled, argnums=tuple(range(len(args))))(
            *[np.float64(v) for v in args])
        return value.item(), [g.item() for g in grads]
    leaves = [Value(v) for v in args]               # compiled_in_eager
    out = compiled(*leaves)
    out.backward()
    return out.item(), [t.grad.item() for t in leaves]


CASES = {"sanity_check": (sanity_check, (-4.0,)), "more_ops": (more_ops, (-4.0, 2.0))}


@needs_torch
@pytest.mark.parametrize("mode", ["grad_of_compiled", "compiled_in_eager"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_matches_torch(case, mode):
    fn, args = CASES[case]
    value, grads = _compiled_grads(fn, args, mode)
    if case == "sanity_check":
        xpt, ypt = torch_sanity_check()
        want_value, want_grads = ypt.item(), [xpt.grad.item()]
    else:
        apt, bpt, gpt = torch_more_ops()
        want_value, want_grads = gpt.item(), [apt.grad.item(), bpt.grad.item()]
    np.testing.assert_allclose(value, want_value, rtol=1e-12)
    np.testing.assert_allclose(grads, want_grads, rtol=1e-12)


@pytest.mark.parametrize("mode", ["eager", "grad_of_compiled", "compiled_in_eager"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_grads_match_finite_differences(case, mode):
    fn, args = CASES[case]
    if mode == "eager":
        leaves = [Value(v) for v in args]
        out = fn(*leaves)
        out.backward()
        grads = [t.grad.item() for t in leaves]
    else:
        _, grads = _compiled_grads(fn, args, mode)
    eps = 1e-6
    for i in range(len(args)):
        plus, minus = list(args), list(args)
        plus[i] += eps
        minus[i] -= eps
        with tj.no_grad():
            numeric = (fn(*map(Value, plus)).item() - fn(*map(Value, minus)).item()) / (2 * eps)
        np.testing.assert_allclose(grads[i], numeric, rtol=1e-6)
