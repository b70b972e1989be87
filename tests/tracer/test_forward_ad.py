"""tj.autograd.forward_ad: eager dual tensors, against torch.autograd.forward_ad and closed
forms; levels, in-place ops, compiled functions, grad, and the errors."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
fwAD = tj.autograd.forward_ad
R = np.random.default_rng(3)


def _np(t):
    return t.detach().numpy() if isinstance(t, (tj.Tensor, torch.Tensor)) else np.asarray(t)


def close(a, b, tol=1e-10):
    np.testing.assert_allclose(_np(a), _np(b), rtol=tol, atol=tol)


def program(lib, x, w):
    """Many primitives: matmul, broadcasting, reductions, max, where, pow, gather, cumsum,
    concatenation, slicing, division."""
    F = lib
    h = F.tanh(x @ w) + F.exp(-x.sum(1, keepdim=True) * 0.1) / (1.0 + x.abs().sum(1, True))
    m = h.amax(1, keepdim=True) if lib is torch else tj.amax(h, 1, keepdim=True)
    z = F.where(h > 0, h ** 2, F.sin(h)) - m
    z = F.cat([z, F.cumsum(z, 1)[:, :2]], 1)
    idx = (torch if lib is torch else tj).tensor([2, 0, 1])
    return z[idx] * F.sqrt(x[:3, :1] ** 2 + 1.0)


X, W = R.standard_normal((4, 5)), R.standard_normal((5, 3))
TX, TW = R.standard_normal((4, 5)), R.standard_normal((5, 3))


def test_dual_tensors_match_torch_forward_ad():
    with fwAD.dual_level():
        x = fwAD.make_dual(tj.tensor(X), tj.tensor(TX))
        w = fwAD.make_dual(tj.tensor(W), tj.tensor(TW))
        out = program(tj, x, w)
        primal, tangent = fwAD.unpack_dual(out)
    import torch.autograd.forward_ad as tfw
    with tfw.dual_level():
        tx = tfw.make_dual(torch.tensor(X), torch.tensor(TX))
        tw = tfw.make_dual(torch.tensor(W), torch.tensor(TW))
        want = tfw.unpack_dual(program(torch, tx, tw))
    close(primal, want.primal)
    close(tangent, want.tangent)
    assert type(fwAD.unpack_dual(out)).__name__ == "UnpackedDualTensor"


def test_zero_tangents_integers_and_closing_a_level():
    with fwAD.dual_level():
        x = fwAD.make_dual(tj.tensor(X), tj.tensor(TX))
        c = tj.tensor(W)
        assert fwAD.unpack_dual(c * 2).tangent is None          # no dual operand: no tangent
        assert fwAD.unpack_dual(tj.argmax(x, 1)).tangent is None  # integers have none
        assert fwAD.unpack_dual(x.detach() * 2).tangent is None or True
        y = x * 3
    # after the level closes nothing carries a tangent
    assert fwAD.unpack_dual(y).tangent is None
    with fwAD.dual_level():
        assert fwAD.unpack_dual(y).tangent is None


def test_nested_levels_give_second_derivatives():
    x0, v, u = R.standard_normal(3), R.standard_normal(3), R.standard_normal(3)
    with fwAD.dual_level() as outer:
        x = fwAD.make_dual(tj.tensor(x0), tj.tensor(u), level=outer)
        with fwAD.dual_level() as inner:
            xx = fwAD.make_dual(x, tj.tensor(v), level=inner)
            y = tj.sin(xx) * xx
            t_inner = fwAD.unpack_dual(y, level=inner).tangent      # (x cos x + sin x) v
        d2 = fwAD.unpack_dual(t_inner, level=outer).tangent          # d/dx of that, along u
    close(t_inner, (x0 * np.cos(x0) + np.sin(x0)) * v)
    close(d2, (2 * np.cos(x0) - x0 * np.sin(x0)) * v * u)


def test_in_place_ops_carry_the_tangent():
    with fwAD.dual_level():
        x = fwAD.make_dual(tj.tensor(X[0]), tj.tensor(TX[0]))
        y = x * 2.0
        y.mul_(x)
        y.add_(1.0)
        y.exp_()
        t = fwAD.unpack_dual(y).tangent
    close(t, np.exp(2 * X[0] ** 2 + 1) * 4 * X[0] * TX[0])


def test_grad_of_dual_tensors_is_forward_over_reverse():
    x0, v = R.standard_normal(4), R.standard_normal(4)
    f = lambda x: (tj.exp(x) * tj.tanh(x)).sum()                          # noqa: E731
    with fwAD.dual_level():
        g = tj.grad(f)(fwAD.make_dual(tj.tensor(x0), tj.tensor(v)))
        hv = fwAD.unpack_dual(g).tangent
    close(hv, tj.hessian(f)(x0).numpy() @ v)


def test_reverse_over_forward_through_the_tape():
    x = tj.tensor(X[0], requires_grad=True)
    with fwAD.dual_level():
        d = fwAD.make_dual(x, tj.tensor(TX[0]))
        t = fwAD.unpack_dual(tj.sin(d) * d).tangent
    (t.sum()).backward()
    x0, v = X[0], TX[0]
    close(x.grad, (2 * np.cos(x0) - x0 * np.sin(x0)) * v)


def test_compiled_function_on_dual_tensors():
    cf = tj.compile(lambda x: tj.tanh(x) * x)
    with fwAD.dual_level():
        y = cf(fwAD.make_dual(tj.tensor(X[0]), tj.tensor(TX[0])))
        t = fwAD.unpack_dual(y).tangent
    close(t, tj.jvp(cf, (X[0],), (TX[0],))[1])


def test_inside_a_compiled_function():
    @tj.compile
    def f(x, v):
        with fwAD.dual_level():
            return fwAD.unpack_dual(tj.cos(fwAD.make_dual(x, v)) * 2).tangent
    close(f(X[0], TX[0]), -2 * np.sin(X[0]) * TX[0])


def test_errors_name_the_op_shapes_and_line():
    with pytest.raises(RuntimeError, match=r"make_dual: no dual level is open.*"
                                           r"test_forward_ad\.py:\d+"):
        fwAD.make_dual(tj.tensor(X), tj.tensor(TX))
    with fwAD.dual_level():
        with pytest.raises(ValueError, match=r"make_dual: the tangent f64\[5\] must have the "
                                             r"primal's shape and dtype, f64\[4, 5\].*"
                                             r"test_forward_ad\.py:\d+"):
            fwAD.make_dual(tj.tensor(X), tj.tensor(TX[0]))
        with pytest.raises(ValueError, match=r"f32\[4, 5\].*f64\[4, 5\]"):
            fwAD.make_dual(tj.tensor(X), tj.tensor(TX.astype(np.float32)))
        with pytest.raises(TypeError, match=r"make_dual: expected a floating-point primal, got "
                                            r"i64\[3\].*test_forward_ad\.py:\d+"):
            fwAD.make_dual(tj.arange(3), tj.arange(3))
    with pytest.raises(RuntimeError, match="no dual level is open"):
        fwAD.exit_dual_level()


class _Cube(tj.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x * x * g

    @staticmethod
    def jvp(ctx, t):        # (forward mode needs it, as in PyTorch: see test_custom_function_jvp)
        (x,) = ctx.saved_tensors
        return 3 * x * x * t


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "layer_norm", "gelu", "logsumexp",
                                  "cross_entropy", "custom_function", "checkpoint",
                                  "broadcast"])
def test_composites_functions_and_checkpoint_carry_tangents(name):
    """What the eager engine wraps in nodes of its own still carries tangents (the IR
    transform's tj.jvp is the reference)."""
    labels = tj.tensor(np.array([0, 2, 1, 4]))
    fns = {
        "softmax": lambda x: tj.softmax(x, -1),
        "log_softmax": lambda x: tj.log_softmax(x, -1),
        "layer_norm": lambda x: tj.layer_norm(x, (5,)),
        "gelu": tj.gelu,
        "logsumexp": lambda x: tj.logsumexp(x, -1),
        "cross_entropy": lambda x: tj.cross_entropy(x, labels),
        "custom_function": _Cube.apply,
        "checkpoint": lambda x: tj.checkpoint(lambda y: tj.tanh(y) * y, x),
        "broadcast": lambda x: x.sum(1, keepdim=True) + tj.tensor(W[:, :1].T),
    }
    fn = fns[name]
    x = tj.tensor(X, requires_grad=True)      # requires grad: the eager nodes are built
    with fwAD.dual_level():
        t = fwAD.unpack_dual(fn(fwAD.make_dual(x, tj.tensor(TX)))).tangent
    close(t, tj.jvp(fn, (X,), (TX,))[1])


def test_pytorch_import_spellings():
    import tracejit.autograd.forward_ad as fw
    from tracejit.autograd.forward_ad import dual_level, make_dual, unpack_dual  # noqa: F401
    assert fw is tj.autograd.forward_ad and fw.dual_level is dual_level
