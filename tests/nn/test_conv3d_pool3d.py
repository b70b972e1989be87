"""3-D convolution, transposed convolution and pooling, and the 3-D modules (Conv3d,
ConvTranspose3d, MaxPool3d, AvgPool3d, AdaptiveAvgPool3d, BatchNorm3d, InstanceNorm3d) and 5-D
interpolate, against torch: values and gradients, eager and compiled (CPU). The conv3d family of
primitives shares conv2d's rules (ir/prims_conv.py); its JVP and batching rules are checked in
tests/ir/test_jvp_rules.py and test_batch_rules.py, its CUDA source in
tests/codegen/test_conv_cuda.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tracejit as tj
from tracejit import nn
from tracejit.nn import functional as F

R = np.random.default_rng(0)


def _close(got, want, tol=1e-10):
    got = got.detach().numpy() if hasattr(got, "detach") else np.asarray(got)
    want = want.detach().numpy() if hasattr(want, "detach") else np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def _check(tj_fn, torch_fn, arrays, compiled=True, tol=1e-10):
    """Values and gradients (of <out, probe>) of tj_fn against torch_fn on float64 arrays,
    eagerly and, optionally, compiled."""
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    want = torch_fn(*ts)
    probe = R.standard_normal(tuple(want.shape))
    (want * torch.tensor(probe)).sum().backward()
    xs = [tj.tensor(a, requires_grad=True) for a in arrays]
    got = tj_fn(*xs)
    _close(got, want, tol)
    (got * tj.tensor(probe)).sum().backward()
    for x, t in zip(xs, ts):
        _close(x.grad, t.grad, tol)
    if compiled:
        argnums = tuple(range(len(arrays)))
        f = tj.compile(lambda *a: (tj_fn(*a[:-1]) * a[-1]).sum())
        grads = tj.grad(f, argnums=argnums)(*arrays, probe)
        for g, t in zip(grads, ts):
            _close(g, t.grad, tol)


# x shape, (O, kD, kH, kW), keyword arguments
CONV_CASES = [
    ((2, 3, 4, 5, 4), (4, 2, 3, 2), dict(padding="same", dilation=(1, 2, 1))),
    ((2, 4, 5, 6, 5), (6, 3, 2, 2), dict(stride=(2, 1, 2), padding=(1, 0, 1), groups=2)),
    ((1, 2, 1, 4, 3), (3, 1, 2, 3), dict(padding="valid")),        # depth 1
]


@pytest.mark.parametrize("xs,ws,kw", CONV_CASES, ids=["same_dil", "stride_groups", "depth1"])
def test_conv3d_matches_torch(xs, ws, kw):
    g = kw.get("groups", 1)
    x = R.standard_normal(xs)
    w = R.standard_normal((ws[0], xs[1] // g) + ws[1:])
    b = R.standard_normal(ws[0])
    _check(lambda x, w, b: F.conv3d(x, w, b, **kw), lambda x, w, b: TF.conv3d(x, w, b, **kw),
           [x, w, b])


def test_conv3d_non_contiguous_and_unbatched_input():
    x = R.standard_normal((2, 5, 4, 3, 3))          # read as (N, C, D, H, W) after a permute
    w = R.standard_normal((2, 3, 1, 2, 2))
    _check(lambda x, w: F.conv3d(x.permute(0, 4, 1, 2, 3), w, stride=2),
           lambda x, w: TF.conv3d(x.permute(0, 4, 1, 2, 3), w, stride=2), [x, w],
           compiled=False)
    _check(lambda x, w: F.conv3d(x[0, :3], w, padding=1),
           lambda x, w: TF.conv3d(x[0, :3], w, padding=1), [x, w], compiled=False)


def test_conv3d_double_backward_matches_torch():
    x, w = R.standard_normal((1, 2, 3, 4, 3)), R.standard_normal((2, 2, 2, 2, 2))

    def loss(fn, grad, x, w):
        gx, gw = grad((fn(x, w, padding=1) ** 2).sum(), (x, w))
        return (gx ** 2).sum() + (gw * gw.sin()).sum()
    tx, tw = (torch.tensor(a, requires_grad=True) for a in (x, w))
    X, W = (tj.tensor(a, requires_grad=True) for a in (x, w))
    loss(TF.conv3d, lambda o, i: torch.autograd.grad(o, i, create_graph=True), tx, tw).backward()
    loss(F.conv3d, lambda o, i: tj.autograd.grad(o, i, create_graph=True), X, W).backward()
    _close(X.grad, tx.grad, 1e-9)
    _close(W.grad, tw.grad, 1e-9)


def test_conv_transpose3d_matches_torch():
    x = R.standard_normal((2, 4, 3, 2, 3))
    w = R.standard_normal((4, 3, 2, 3, 2))
    b = R.standard_normal(6)
    kw = dict(stride=(2, 1, 2), padding=(0, 1, 1), output_padding=(1, 0, 1), groups=2)
    _check(lambda x, w, b: F.conv_transpose3d(x, w, b, **kw),
           lambda x, w, b: TF.conv_transpose3d(x, w, b, **kw), [x, w, b])


def test_max_pool3d_matches_torch_with_indices():
    x = R.standard_normal((2, 3, 5, 6, 5))
    x[0, 0, 0, 0, 1] = x[0, 0, 0, 0, 0]            # a tie: the first position takes the gradient
    kw = dict(kernel_size=(2, 3, 2), stride=(1, 2, 2), padding=(1, 1, 0), dilation=(2, 1, 1),
              ceil_mode=True)
    _check(lambda x: F.max_pool3d(x, **kw), lambda x: TF.max_pool3d(x, **kw), [x])
    _, idx = F.max_pool3d(tj.tensor(x), return_indices=True, **kw)
    _, tidx = TF.max_pool3d(torch.tensor(x), return_indices=True, **kw)
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())
    # unbatched input, default stride, and the module
    m, tm = nn.MaxPool3d(2, return_indices=True), torch.nn.MaxPool3d(2, return_indices=True)
    for got, want in zip(m(tj.tensor(x[0])), tm(torch.tensor(x[0]))):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("kw", [
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False, ceil_mode=True),
    dict(kernel_size=(1, 2, 3), stride=(1, 1, 2), divisor_override=5),
], ids=["exclude_pad_ceil", "divisor"])
def test_avg_pool3d_matches_torch(kw):
    x = R.standard_normal((2, 2, 4, 5, 7))
    _check(lambda x: F.avg_pool3d(x, **kw), lambda x: TF.avg_pool3d(x, **kw), [x],
           compiled=kw.get("divisor_override") is None)


@pytest.mark.parametrize("size", [(2, 3, 5), (1, None, 3)], ids=["uneven", "none"])
def test_adaptive_avg_pool3d_matches_torch(size):
    x = R.standard_normal((2, 3, 4, 5, 7))
    _check(lambda x: F.adaptive_avg_pool3d(x, size),
           lambda x: TF.adaptive_avg_pool3d(x, size), [x], compiled=size[1] is None)
    _close(nn.AdaptiveAvgPool3d(2)(tj.tensor(x[0])),
           torch.nn.AdaptiveAvgPool3d(2)(torch.tensor(x[0])))


def test_modules_match_torch_in_one_step():
    """Conv3d -> BatchNorm3d -> ReLU -> AvgPool3d -> ConvTranspose3d -> InstanceNorm3d in
    training mode: outputs, every parameter's gradient and the running statistics."""
    torch.manual_seed(0)
    tm = torch.nn.Sequential(
        torch.nn.Conv3d(2, 4, 3, padding=1, groups=2), torch.nn.BatchNorm3d(4),
        torch.nn.ReLU(), torch.nn.AvgPool3d(2, ceil_mode=True),
        torch.nn.ConvTranspose3d(4, 3, 2, stride=2, bias=False),
        torch.nn.InstanceNorm3d(3, affine=True)).double()
    m = nn.Sequential(
        nn.Conv3d(2, 4, 3, padding=1, groups=2), nn.BatchNorm3d(4), nn.ReLU(),
        nn.AvgPool3d(2, ceil_mode=True), nn.ConvTranspose3d(4, 3, 2, stride=2, bias=False),
        nn.InstanceNorm3d(3, affine=True)).to(tj.float64)
    m.load_state_dict({k: tj.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
    x = R.standard_normal((2, 2, 3, 4, 5))
    probe = R.standard_normal((2, 3, 4, 4, 6))
    ty = tm(torch.tensor(x))
    y = m(tj.tensor(x))
    _close(y, ty, 1e-9)
    (ty * torch.tensor(probe)).sum().backward()
    (y * tj.tensor(probe)).sum().backward()
    params = dict(m.named_parameters())
    for name, p in tm.named_parameters():
        _close(params[name].grad, p.grad, 1e-8)
    _close(m[1].running_var, tm[1].running_var, 1e-12)
    assert "Conv3d(2, 4, kernel_size=(3, 3, 3)" in repr(m)


@pytest.mark.parametrize("mode,kw", [("trilinear", dict(size=(3, 5, 2), align_corners=True)),
                                     ("trilinear", dict(scale_factor=(2, 1.5, 1))),
                                     ("nearest", dict(scale_factor=2))])
def test_interpolate_5d_matches_torch(mode, kw):
    x = R.standard_normal((1, 2, 2, 3, 4))
    _check(lambda x: F.interpolate(x, mode=mode, **kw),
           lambda x: TF.interpolate(x, mode=mode, **kw), [x], compiled=False)


def test_errors_name_the_op_and_shapes():
    x = tj.tensor(np.zeros((1, 4, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"conv3d: .*4-D \(C, D, H, W\) or 5-D.*f32\[3, 3\]"):
        F.conv3d(tj.tensor(np.zeros((3, 3), np.float32)),
                 tj.tensor(np.zeros((2, 4, 1, 1, 1), np.float32)))
    with pytest.raises(ValueError, match=r"conv3d: input f32\[1,4,3,3,3\] has 4 channels.*"
                                         r"groups=3.*test_conv3d_pool3d.py:\d+"):
        F.conv3d(x, tj.tensor(np.zeros((3, 1, 1, 1, 1), np.float32)), groups=3)
    with pytest.raises(ValueError, match=r"conv3d: weight must be 5-D"):
        F.conv3d(x, tj.tensor(np.zeros((3, 4, 1, 1), np.float32)))
    with pytest.raises(ValueError, match=r"max_pool3d: expects a 4-D .* or 5-D"):
        F.max_pool3d(tj.tensor(np.zeros((2, 3, 3), np.float32)), 2)
    with pytest.raises(ValueError, match=r"avg_pool3d: kernel_size must be an int or a triple"):
        F.avg_pool3d(x, (2, 2))
    with pytest.raises(ValueError, match=r"Conv3d: in_channels \(4\).*groups \(3\)"):
        nn.Conv3d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match=r"BatchNorm3d: expected 5-D input"):
        nn.BatchNorm3d(4)(tj.tensor(np.zeros((1, 4, 3, 3), np.float32)))


def test_adaptive_max_pool3d_matches_torch():
    x = R.standard_normal((2, 2, 3, 5, 4))
    x[0, 0, 0, 0, :2] = 7.0                         # a tie inside one window: the first wins
    for size in [(2, 3, 3), (3, 1, 2)]:             # uneven windows; tiling windows
        _check(lambda x: F.adaptive_max_pool3d(x, size),
               lambda x: TF.adaptive_max_pool3d(x, size), [x], compiled=size == (2, 3, 3))
        _, idx = F.adaptive_max_pool3d(tj.tensor(x), size, return_indices=True)
        _, tidx = TF.adaptive_max_pool3d(torch.tensor(x), size, return_indices=True)
        np.testing.assert_array_equal(idx.numpy(), tidx.numpy())
    _close(nn.AdaptiveMaxPool3d((1, None, 2))(tj.tensor(x[0])),
           torch.nn.AdaptiveMaxPool3d((1, None, 2))(torch.tensor(x[0])))
