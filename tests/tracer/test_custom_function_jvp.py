"""Custom autograd.Functions in forward mode (#15), PyTorch's contract: a `jvp(ctx, *tangents)`
staticmethod gives the outputs' tangents (it reads `ctx.save_for_forward`'s tensors), for dual
tensors and for tj.jvp/linearize/jacfwd, plain and compiled; `forward(*args)` with
`setup_context`; without a jvp, forward mode through the Function is torch's error. The
Functions below have a jvp that is NOT the derivative of their forward's ops (a
straight-through estimator), so only the jvp can give the expected tangent."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
import torch.autograd.forward_ad as tfw  # noqa: E402

fwAD = tj.autograd.forward_ad
X = np.array([0.3, -1.7, 2.2, 0.9])
Y = np.array([1.5, 0.5, -2.0, 3.0])
T = np.array([1.0, -0.5, 0.25, 2.0])


def make_classes(lib):
    """The same Functions for tracejit and for torch."""
    F = lib.autograd.Function

    class SignST(F):
        """sign(x) * y * k; jvp: the straight-through tangent (t_x * y + sign(x) * t_y) * k;
        records what jvp was given."""
        seen: list = []

        @staticmethod
        def forward(ctx, x, y, k):
            ctx.save_for_backward(y)
            ctx.save_for_forward(x, y)
            ctx.k = k
            return lib.sign(x) * y * k

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g * y * ctx.k, None, None

        @staticmethod
        def jvp(ctx, tx, ty, tk):
            x, y = ctx.saved_tensors
            SignST.seen.append((tx, ty, tk))
            return (tx * y + lib.sign(x) * ty) * ctx.k

    class SinCos(F):
        """forward(*args) + setup_context, two outputs."""

        @staticmethod
        def forward(x):
            return lib.sin(x), lib.cos(x)

        @staticmethod
        def setup_context(ctx, inputs, output):
            (x,) = inputs
            ctx.save_for_forward(x)
            ctx.save_for_backward(x)

        @staticmethod
        def backward(ctx, a, b):
            (x,) = ctx.saved_tensors
            return a * lib.cos(x) - b * lib.sin(x)

        @staticmethod
        def jvp(ctx, tx):
            (x,) = ctx.saved_tensors
            return tx * lib.cos(x), -tx * lib.sin(x)

    class NoJvp(F):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

    class BadJvp(F):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

        @staticmethod
        def jvp(ctx, t):
            return t[:1]
    return SignST, SinCos, NoJvp, BadJvp


TJ = make_classes(tj)
TORCH = make_classes(torch)


def _np(t):
    return t.detach().numpy()


def test_dual_tensors_use_the_jvp_as_torch():
    got, want = [], []
    for lib, fw, (SignST, SinCos, _, _), out in ((tj, fwAD, TJ, got), (torch, tfw, TORCH, want)):
        SignST.seen.clear()
        with fw.dual_level():
            x = fw.make_dual(lib.tensor(X), lib.tensor(T))
            y = lib.tensor(Y)
            r = SignST.apply(x, y, 2.0)
            a, b = SinCos.apply(x)
            out += [fw.unpack_dual(r).primal, fw.unpack_dual(r).tangent,
                    fw.unpack_dual(a).tangent, fw.unpack_dual(b).tangent]
        tx, ty, tk = SignST.seen[0]
        out += [tx, ty]                 # a tensor without a tangent gets zeros
        assert tk is None               # a non-tensor argument gets None
    for g, w in zip(got, want):
        np.testing.assert_allclose(_np(g), _np(w), rtol=1e-12)
    np.testing.assert_allclose(_np(got[1]), T * Y * 2.0)      # straight through


def test_setup_context_functions_also_run_backward():
    SinCos = TJ[1]
    x = tj.tensor(X, requires_grad=True)
    a, b = SinCos.apply(x)
    (a * 2 + b).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.cos(X) - np.sin(X), rtol=1e-12)


def test_without_a_jvp_forward_mode_is_torchs_error():
    NoJvp = TJ[2]
    with fwAD.dual_level():
        assert fwAD.unpack_dual(NoJvp.apply(tj.tensor(X))).tangent is None   # no tangent in
        with pytest.raises(NotImplementedError, match="must implement the jvp function"):
            NoJvp.apply(fwAD.make_dual(tj.tensor(X), tj.tensor(T)))
    with pytest.raises(NotImplementedError, match="must implement the jvp function.*NoJvp"):
        tj.jvp(NoJvp.apply, (X,), (T,))
    with tfw.dual_level(), pytest.raises(NotImplementedError, match="must implement the jvp"):
        TORCH[2].apply(tfw.make_dual(torch.tensor(X), torch.tensor(T)))


def test_a_tangent_of_the_wrong_shape_is_an_error():
    with fwAD.dual_level():
        with pytest.raises(RuntimeError, match=r"BadJvp.jvp.*f64\[1\].*f64\[4\]"):
            TJ[3].apply(fwAD.make_dual(tj.tensor(X), tj.tensor(T)))


def _f(x, y):
    a, b = TJ[1].apply(x)
    return TJ[0].apply(x, y, 2.0) + a * b


def _df(x, y, tx, ty):
    """The tangent the jvps give: straight-through for sign, the true one for sin*cos."""
    return (tx * y + np.sign(x) * ty) * 2.0 + tx * np.cos(2 * x)


@pytest.mark.parametrize("compiled", [False, True])
def test_tj_jvp_uses_the_jvp(compiled):
    f = tj.compile(_f) if compiled else _f
    for k in range(2):                  # (the second call: a kept trace)
        x = X + k
        out, tan = tj.jvp(f, (x, Y), (T, 2 * T))
        np.testing.assert_allclose(out.numpy(), np.sign(x) * Y * 2 + np.sin(x) * np.cos(x),
                                   rtol=1e-12)
        np.testing.assert_allclose(tan.numpy(), _df(x, Y, T, 2 * T), rtol=1e-12)


def test_jvp_under_compile_and_torch_func():
    g = tj.compile(lambda x, t: tj.jvp(lambda z: _f(z, tj.tensor(Y)), (x,), (t,))[1])
    np.testing.assert_allclose(g(X, T).numpy(), _df(X, Y, T, 0 * T), rtol=1e-12)
    from torch.func import jvp
    SinCos = TORCH[1]
    want = jvp(SinCos.apply, (torch.tensor(X),), (torch.tensor(T),))[1]
    got = tj.jvp(TJ[1].apply, (X,), (T,))[1]
    for a, b in zip(got, want):
        np.testing.assert_allclose(_np(a), _np(b), rtol=1e-12)


def test_linearize_and_jacfwd_use_the_jvp():
    out, f_jvp = tj.linearize(_f, X, Y)
    np.testing.assert_allclose(f_jvp(T, -T).numpy(), _df(X, Y, T, -T), rtol=1e-12)
    jac = tj.jacfwd(_f)(X, Y).numpy()
    np.testing.assert_allclose(jac, np.diag(_df(X, Y, np.ones(4), 0)), rtol=1e-12)
    with pytest.raises(NotImplementedError, match="linearize of the compiled"):
        tj.linearize(tj.compile(_f), X, Y)


def test_device_copies_carry_the_tangent(fake_gpu):
    """`.to(device)` is a Function of tracejit's own (ToCopy): it has a jvp too."""
    with fwAD.dual_level():
        x = fwAD.make_dual(tj.tensor(X), tj.tensor(T))
        y = (x * 2).to("cuda").to("cpu")
        np.testing.assert_allclose(fwAD.unpack_dual(y).tangent.numpy(), 2 * T)
