"""conv2d and its gradient primitives, and the `windows` view: forward and backward against
torch (eager, tj.compile, tj.grad(tj.compile)) in float32 and float64 over stride, padding
('same' with even kernels too), dilation, groups, 1x1, non-square and size-1 cases and an
empty batch; second derivatives against torch's double backward; float64 central
differences; the backends' im2col + GEMM expansion against the reference interpreter; the IR
dump keeps conv2d; clear errors. (CUDA: tests/codegen/test_conv_cuda.py.)"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tracejit as tj
from tracejit.codegen.fusion import plan as make_plan
from tracejit.ir.interpret import interpret
from tracejit.ir.prims_conv import expand_convs
from tracejit.nn import functional as F

TOL = {np.float32: 2e-5, np.float64: 1e-11}

# (N, C, H, W), (O, kH, kW), stride, padding, dilation, groups
CASES = [
    ((2, 3, 7, 6), (4, 3, 3), 1, 0, 1, 1),
    ((2, 4, 7, 6), (6, 3, 2), (2, 1), 1, (1, 2), 2),
    ((1, 3, 5, 5), (3, 3, 3), 1, "same", 1, 1),
    ((2, 4, 6, 8), (4, 2, 2), 1, "same", 2, 4),          # even kernel: asymmetric padding
    ((2, 2, 6, 5), (3, 4, 1), 1, "same", (1, 1), 1),
    ((3, 5, 4, 4), (2, 1, 1), 1, 0, 1, 1),                # 1x1
    ((2, 3, 1, 1), (2, 1, 1), 1, 0, 1, 1),                # size-1 spatial
    ((2, 2, 1, 5), (3, 1, 3), 2, (0, 1), 1, 1),
    ((1, 2, 9, 7), (2, 3, 3), 3, 2, 2, 2),
    ((2, 3, 5, 5), (3, 3, 3), 1, "valid", 1, 1),
    ((0, 2, 4, 4), (2, 3, 3), 1, 1, 1, 1),                # empty batch
]


def _data(case, dtype, seed=0):
    xs, (o, kh, kw), stride, padding, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((o, xs[1] // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    kw_ = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return x, w, b, kw_


def _torch(x, w, b, kw, gy):
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = TF.conv2d(tx, tw, tb, **kw)
    ty.backward(torch.tensor(gy))
    return ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


def _close(got, want, tol):
    got = got.detach().numpy() if hasattr(got, "detach") else np.asarray(got)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_conv2d_eager_and_compiled_match_torch(case, dtype):
    x, w, b, kw = _data(case, dtype)
    out_shape = TF.conv2d(torch.tensor(x), torch.tensor(w), None, **kw).shape
    gy = np.random.default_rng(1).standard_normal(out_shape).astype(dtype)
    ty, gx, gw, gb = _torch(x, w, b, kw, gy)
    tol = TOL[dtype]

    X, W, B = (tj.tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.conv2d(X, W, B, **kw)
    _close(y, ty, tol)
    y.backward(tj.tensor(gy))
    for got, want in ((X.grad, gx), (W.grad, gw), (B.grad, gb)):
        _close(got, want, tol)

    f = tj.compile(lambda x, w, b: F.conv2d(x, w, b, **kw))
    _close(f(x, w, b), ty, tol)
    g = tj.grad(tj.compile(lambda x, w, b, gy: (F.conv2d(x, w, b, **kw) * gy).sum()),
                argnums=(0, 1, 2))
    for got, want in zip(g(x, w, b, gy), (gx, gw, gb)):
        _close(got, want, tol)


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[8]], ids=["strided", "same", "dil"])
def test_second_derivatives_match_torch(case):
    """grad of (a function of the gradients): conv2d_input_grad and conv2d_weight_grad
    differentiate into each other and conv2d, eagerly and compiled."""
    x, w, b, kw = _data(case, np.float64)

    def loss(conv, x, w, b, grad):
        y = conv(x, w, b, **kw)
        gx, gw = grad((y * y).sum() / 2 + y.sum(), (x, w))
        return (gx * gx).sum() + (gw * gw * gw).sum()

    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    tl = loss(TF.conv2d, tx, tw, tb, lambda o, i: torch.autograd.grad(o, i, create_graph=True))
    want = torch.autograd.grad(tl, (tx, tw, tb))

    X, W, B = (tj.tensor(a, requires_grad=True) for a in (x, w, b))
    el = loss(F.conv2d, X, W, B, lambda o, i: tj.autograd.grad(o, i, create_graph=True))
    np.testing.assert_allclose(el.item(), tl.item(), rtol=1e-10)
    for got, t in zip(tj.autograd.grad(el, (X, W, B)), want):
        _close(got, t.numpy(), 1e-9)

    def inner(x, w, b):
        y = F.conv2d(x, w, b, **kw)
        return (y * y).sum() / 2 + y.sum()

    gfun = tj.grad(inner, argnums=(0, 1))

    def outer(x, w, b):
        gx, gw = gfun(x, w, b)
        return (gx * gx).sum() + (gw * gw * gw).sum()

    for got, t in zip(tj.grad(tj.compile(outer), argnums=(0, 1, 2))(x, w, b), want):
        _close(got, t.numpy(), 1e-9)


def test_central_differences_float64():
    for case in (CASES[1], CASES[3]):
        x, w, b, kw = _data(case, np.float64, seed=3)
        ins = [tj.tensor(a, requires_grad=True) for a in (x, w, b)]
        assert tj.autograd.gradcheck(lambda x, w, b: F.conv2d(x, w, b, **kw).sin(), ins)
        # the gradient primitives themselves
        assert tj.autograd.gradcheck(
            lambda x, w: tj.autograd.grad((F.conv2d(x, w, **kw) ** 2).sum(), (x, w),
                                          create_graph=True)[0].cos(), ins[:2])


def test_windows_view_matches_unfold_and_its_vjp_is_col2im():
    x = np.random.default_rng(2).standard_normal((2, 3, 7, 8))
    X = tj.tensor(x, requires_grad=True)
    from tracejit.ir.prims_conv import windows
    win = windows(X, (2, 3), (2, 1), (2, 1))                # [N, C, kH, kW, OH, OW]
    ref = TF.unfold(torch.tensor(x), (2, 3), dilation=(2, 1), stride=(2, 1))
    n, c, kh, kw, oh, ow = win.shape
    np.testing.assert_array_equal(win.detach().numpy().reshape(n, c * kh * kw, oh * ow),
                                  ref.numpy())
    gy = np.random.default_rng(3).standard_normal(win.shape)
    (win * tj.tensor(gy)).sum().backward()
    want = TF.fold(torch.tensor(gy.reshape(n, c * kh * kw, oh * ow)), (7, 8), (2, 3),
                   dilation=(2, 1), stride=(2, 1))
    np.testing.assert_allclose(X.grad.numpy(), want.numpy(), rtol=1e-12, atol=1e-12)


def test_ir_shows_conv2d_and_the_backends_see_im2col_plus_gemm():
    x, w, b, kw = _data(CASES[1], np.float32)
    f = tj.grad(lambda x, w, b: (F.conv2d(x, w, b, **kw) ** 2).sum(), argnums=(0, 1, 2))
    graph = tj.compile(f).lower(x, w, b).graph
    text = graph.as_text()
    for op in ("conv2d ", "conv2d_input_grad", "conv2d_weight_grad"):
        assert op in text
    expanded = expand_convs(graph)
    names = {ins.prim.name for ins in expanded.instrs}
    assert not names & {"conv2d", "conv2d_input_grad", "conv2d_weight_grad"}
    assert {"windows", "matmul"} <= names
    kinds = [k.kind for k in make_plan(expanded).kernels]
    assert kinds.count("matmul") == 3           # forward, input and weight gradients: GEMMs
    for got, want in zip(interpret(expanded, [x, w, b]), interpret(graph, [x, w, b])):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_half_precision_accumulates_in_float32():
    x, w, b, kw = _data(CASES[0], np.float32)
    want = TF.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), **kw).numpy()
    for dtype in (np.float16, tj.bfloat16.np):
        args = [a.astype(dtype) for a in (x, w, b)]
        ref = TF.conv2d(*(torch.tensor(a.astype(np.float32)) for a in args), **kw).numpy()
        for got in (F.conv2d(*(tj.tensor(a) for a in args), **kw),
                    tj.compile(lambda x, w, b: F.conv2d(x, w, b, **kw))(*args)):
            got = got.numpy().astype(np.float32)
            np.testing.assert_allclose(got, ref, rtol=2e-2, atol=2e-2 * np.abs(want).max())


def test_clear_errors_name_the_op_and_the_line():
    x = tj.tensor(np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"conv2d.*channels.*test_conv.py:\d+"):
        F.conv2d(x, tj.tensor(np.zeros((2, 2, 3, 3), np.float32)))
    with pytest.raises(ValueError, match=r"conv2d.*larger than.*test_conv.py:\d+"):
        F.conv2d(x, tj.tensor(np.zeros((2, 3, 7, 7), np.float32)))
    with pytest.raises(TypeError, match=r"conv2d.*same floating dtype.*test_conv.py:\d+"):
        F.conv2d(x, tj.tensor(np.zeros((2, 3, 3, 3), np.float64)))
    with pytest.raises(ValueError, match=r"conv2d.*strided.*test_conv.py:\d+"):
        F.conv2d(x, tj.tensor(np.zeros((2, 3, 3, 3), np.float32)), stride=2, padding="same")
    with pytest.raises(ValueError, match=r"conv2d.*4-D.*test_conv.py:\d+"):
        F.conv2d(tj.tensor(np.zeros((5, 5), np.float32)),
                 tj.tensor(np.zeros((2, 3, 3, 3), np.float32)))
    f = tj.compile(lambda x, w: F.conv2d(x, w, groups=2))
    with pytest.raises(ValueError, match=r"conv2d.*groups=2.*test_conv.py:\d+"):
        f(np.zeros((1, 3, 5, 5), np.float32), np.zeros((2, 3, 3, 3), np.float32))


def test_unbatched_input():
    x, w, b, kw = _data(CASES[0], np.float64)
    want = TF.conv2d(torch.tensor(x[0]), torch.tensor(w), torch.tensor(b), **kw).numpy()
    _close(F.conv2d(tj.tensor(x[0]), tj.tensor(w), tj.tensor(b), **kw), want, 1e-12)



def test_ir_text_round_trips_through_the_parser():
    """Op names with digits (conv2d) parse back (the parser took `conv` before)."""
    from tracejit.ir.parser import parse_graph
    x, w, b, kw = _data(CASES[3], np.float32)
    f = tj.grad(lambda x, w: (F.max_pool2d(F.conv2d(x, w, **kw), 2, ceil_mode=True) ** 2).sum(),
                argnums=(0, 1))
    text = tj.compile(f).lower(x, w).graph.as_text()
    assert "conv2d_weight_grad" in text and "windows" in text
    assert parse_graph(text).as_text() == text


def test_autocast_runs_conv2d_in_bfloat16_as_torch():
    x, w, b, kw = _data(CASES[1], np.float32)
    with tj.autocast("cpu", dtype=tj.bfloat16):
        y = F.conv2d(tj.tensor(x), tj.tensor(w), tj.tensor(b), **kw)
        yc = tj.compile(lambda x, w, b: F.conv2d(x, w, b, **kw))(x, w, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ty = TF.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), **kw)
    assert y.dtype == tj.bfloat16 and yc.dtype == tj.bfloat16 and ty.dtype == torch.bfloat16
    for got in (y, yc):
        np.testing.assert_allclose(got.float().numpy(), ty.float().numpy(), rtol=2e-2,
                                   atol=2e-2 * float(ty.abs().max()))
