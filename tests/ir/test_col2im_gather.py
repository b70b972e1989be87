"""col2im in gather form (ir/prims_windows.py): the `window_taps` view summed over its two
leading tap axes. The convolution input gradient and the overlapping-window pooling backward
use it (no sum of kH*kW padded views). Checked against torch 2.13 (conv input gradients over
stride/padding/dilation/groups, sizes 0 and 1), against a scatter-add reference in NumPy (the
primitive's rules), float64 central differences (double backward), vmap, and the host-run
CUDA emulation and nvcc."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tracejit as tj
from tracejit.ir import P, bind
from tracejit.ir.interpret import interpret
from tracejit.ir.prims_conv import expand_convs
from tracejit.ir.prims_windows import col2im
from tracejit.nn import functional as F

CASES = [
    # (N, C, H, W), (O, C/groups, kH, kW), conv keywords
    ((2, 3, 9, 8), (4, 3, 3, 3), dict(stride=1, padding=1)),                  # stride < kernel
    ((2, 4, 9, 7), (6, 2, 3, 2), dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)),
    ((1, 2, 11, 10), (2, 2, 5, 3), dict(stride=(3, 2), padding=(2, 0), dilation=(2, 1))),
    ((2, 2, 8, 8), (3, 2, 2, 2), dict(stride=2)),                             # tiles the plane
    ((2, 2, 9, 9), (3, 2, 1, 1), dict(stride=2)),                             # stride > kernel
    ((1, 2, 7, 6), (2, 2, 4, 3), dict(padding="same")),                       # asymmetric pad
    ((1, 1, 1, 1), (1, 1, 1, 1), dict()),                                     # sizes 1
    ((1, 1, 3, 3), (1, 1, 3, 3), dict(padding=1, stride=3)),
    ((0, 2, 5, 5), (3, 2, 3, 3), dict(padding=1)),                            # empty batch
]


def _torch_input_grad(x, w, gout, kw):
    xt = torch.tensor(x, requires_grad=True)
    TF.conv2d(xt, torch.tensor(w), None, **kw).backward(torch.tensor(gout))
    return xt.grad.numpy()


@pytest.mark.parametrize("case", range(len(CASES)))
def test_conv_input_grad_matches_torch(case):
    xs, ws, kw = CASES[case]
    rng = np.random.default_rng(case)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    out_shape = TF.conv2d(torch.tensor(x), torch.tensor(w), None, **kw).shape
    gout = rng.standard_normal(tuple(out_shape))

    def f(x, w, g):
        return (F.conv2d(x, w, **kw) * g).sum()

    want = _torch_input_grad(x, w, gout, kw)
    got = tj.grad(tj.compile(f))(tj.tensor(x), tj.tensor(w), tj.tensor(gout))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10)
    got32 = tj.grad(tj.compile(f))(*(tj.tensor(a.astype(np.float32)) for a in (x, w, gout)))
    np.testing.assert_allclose(got32.numpy(), want, rtol=2e-4, atol=2e-4)


def test_input_grad_is_one_gather_reduction():
    """The expanded input gradient is GEMM + window_taps + one sum (no chain of padded views,
    no slice to crop the padding)."""
    x, w = np.ones((2, 3, 9, 8), np.float32), np.ones((4, 3, 3, 3), np.float32)
    g = np.ones((2, 4, 5, 8), np.float32)

    def f(x, w, g):
        return (F.conv2d(x, w, stride=(2, 1), padding=1) * g).sum()

    graph = tj.grad(tj.compile(f)).lower(x, w, g).graph
    names = [ins.prim.name for ins in expand_convs(graph).instrs]
    assert names.count("window_taps") == 1
    assert "pad" not in names[names.index("window_taps"):]
    assert names.count("add") == 0


def _scatter_reference(cols, hw, stride, dilation, lo):
    """col2im by scatter-add on the padded plane, then cropped."""
    kh, kw, oh, ow = cols.shape[-4:]
    (sh, sw), (dh, dw) = stride, dilation
    big = np.zeros(cols.shape[:-4] + (lo[0] + hw[0] + kh * dh + oh * sh,
                                      lo[1] + hw[1] + kw * dw + ow * sw))
    for i in range(kh):
        for j in range(kw):
            for a in range(oh):
                for b in range(ow):
                    big[..., a * sh + i * dh, b * sw + j * dw] += cols[..., i, j, a, b]
    return big[..., lo[0]:lo[0] + hw[0], lo[1]:lo[1] + hw[1]]


TAPS = [((2, 3), (3, 3), (4, 5), (1, 1), (1, 1), (1, 1)),
        ((3, 2), (5, 3), (9, 7), (2, 2), (1, 2), (0, 1)),
        ((2, 2), (2, 2), (5, 5), (3, 3), (1, 1), (0, 0)),
        ((1, 1), (3, 4), (7, 6), (2, 2), (1, 1), (2, 0)),
        ((3, 3), (1, 1), (1, 1), (1, 1), (1, 1), (1, 1))]


@pytest.mark.parametrize("k,o,hw,s,d,lo", TAPS)
def test_col2im_rules_match_a_scatter(k, o, hw, s, d, lo):
    rng = np.random.default_rng(7)
    cols = rng.standard_normal((2, 3) + k + o)
    want = _scatter_reference(cols, hw, s, d, lo)

    def f(c):
        return col2im(c, hw, s, d, lo=lo)

    got = tj.compile(f)(tj.tensor(cols)).numpy()              # the index map, generated code
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    graph = tj.compile(f).lower(cols).graph
    np.testing.assert_allclose(interpret(graph, [cols])[0], want, rtol=1e-12)   # the impl
    # vmap (the batch rule) over the leading axis
    np.testing.assert_allclose(tj.vmap(f)(tj.tensor(cols)).numpy(), want, rtol=1e-12)


def _numeric_grad(fn, x, eps=1e-6):
    g = np.zeros_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = fn(x)
        flat[i] = old - eps
        down = fn(x)
        flat[i] = old
        gf[i] = (up - down) / (2 * eps)
    return g


@pytest.mark.parametrize("k,o,hw,s,d,lo", TAPS[:3])
def test_col2im_first_and_second_derivatives(k, o, hw, s, d, lo):
    rng = np.random.default_rng(11)
    cols = rng.standard_normal((1, 2) + k + o)
    probe = rng.standard_normal((1, 2) + hw)

    def loss(c):
        return ((col2im(c, hw, s, d, lo=lo) * tj.tensor(probe)).sum()) ** 2

    def loss_np(c):
        return float((_scatter_reference(c, hw, s, d, lo) * probe).sum() ** 2)

    g = tj.grad(loss)(tj.tensor(cols)).numpy()
    np.testing.assert_allclose(g, _numeric_grad(loss_np, cols.copy()), rtol=1e-6, atol=1e-6)
    # second order (window_taps' own VJP): the gradient of <grad(c), v> is H v; central
    # differences of the gradient, which the first check made trustworthy
    v = rng.standard_normal(cols.shape)

    def hv(c):
        return (tj.grad(loss)(c) * tj.tensor(v)).sum()

    def grad_dot_v(c):
        return float((tj.grad(loss)(tj.tensor(c)).numpy() * v).sum())

    got = tj.grad(hv)(tj.tensor(cols)).numpy()
    np.testing.assert_allclose(got, _numeric_grad(grad_dot_v, cols.copy()), rtol=1e-6,
                               atol=1e-6)
    got_c = tj.grad(tj.compile(hv))(tj.tensor(cols)).numpy()
    np.testing.assert_allclose(got_c, got, rtol=1e-10, atol=1e-10)


def test_window_taps_errors():
    with pytest.raises(ValueError, match=r"window_taps.*\[\.\.\., kH, kW, OH, OW\]"):
        bind(P.window_taps, tj.tensor(np.ones((2, 3, 4), np.float32)), hw=(3, 3),
             stride=(1, 1), dilation=(1, 1), lo=(0, 0))
    with pytest.raises(ValueError, match=r"window_taps.*stride \(0, 1\)"):
        bind(P.window_taps, tj.tensor(np.ones((1, 1, 2, 2), np.float32)), hw=(3, 3),
             stride=(0, 1), dilation=(1, 1), lo=(0, 0))
