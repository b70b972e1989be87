"""Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm1d/2d and their functional forms
against torch (CPU): forward and backward in float32 and float64, eager, tj.compile and
tj.grad; torch's default initialization; BatchNorm's running statistics over training steps
then eval (momentum, cumulative momentum=None, no tracking, compiled module); a small CNN's
loss and gradients."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tracejit as tj
from tracejit import nn
from tracejit.nn import functional as F

TOL = {np.float32: 2e-5, np.float64: 1e-11}


def _close(got, want, tol):
    got = got.detach().numpy() if hasattr(got, "detach") else np.asarray(got)
    want = want.detach().numpy() if hasattr(want, "detach") else np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


POOLS = [
    ("max_pool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("max_pool2d", dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
                        ceil_mode=True)),
    ("max_pool2d", dict(kernel_size=2)),
    ("max_pool2d", dict(kernel_size=3, stride=3, ceil_mode=True)),
    ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("avg_pool2d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False,
                        ceil_mode=True)),
    ("avg_pool2d", dict(kernel_size=(2, 4), stride=(1, 3), ceil_mode=True)),
    ("avg_pool2d", dict(kernel_size=2, divisor_override=3)),
    ("adaptive_avg_pool2d", dict(output_size=(3, 2))),
    ("adaptive_avg_pool2d", dict(output_size=1)),
    ("adaptive_avg_pool2d", dict(output_size=(None, 5))),
    ("adaptive_avg_pool2d", dict(output_size=(7, 4))),
]


def _pool_input(dtype, shape=(2, 3, 7, 8)):
    x = np.round(np.random.default_rng(0).standard_normal(shape), 1).astype(dtype)
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = x[1, 2, 4, 4] = x[1, 2, 5, 4] = 9.0      # ties
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op,kw", POOLS, ids=[f"{n}{i}" for i, (n, _) in enumerate(POOLS)])
def test_pooling_matches_torch(op, kw, dtype):
    x = _pool_input(dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = getattr(TF, op)(tx, **kw)
    gy = np.random.default_rng(1).standard_normal(ty.shape).astype(dtype)
    ty.backward(torch.tensor(gy))
    tol = TOL[dtype]
    fn = getattr(F, op)

    X = tj.tensor(x, requires_grad=True)
    y = fn(X, **kw)
    _close(y, ty, tol)
    y.backward(tj.tensor(gy))
    _close(X.grad, tx.grad, tol)         # max: all to the first maximum, as torch's CPU kernel

    _close(tj.compile(lambda v: fn(v, **kw))(x), ty, tol)
    _close(tj.grad(tj.compile(lambda v, g: (fn(v, **kw) * g).sum()))(x, gy), tx.grad, tol)


@pytest.mark.parametrize("kw", [POOLS[0][1], POOLS[1][1], POOLS[3][1]])
def test_max_pool_indices_and_nan(kw):
    x = _pool_input(np.float32)
    x[1, 1, 2, 3] = np.nan
    to, ti = TF.max_pool2d(torch.tensor(x), return_indices=True, **kw)
    o, i = F.max_pool2d(tj.tensor(x), return_indices=True, **kw)
    np.testing.assert_array_equal(o.numpy(), to.numpy())
    assert i.dtype == tj.int64
    np.testing.assert_array_equal(i.numpy(), ti.numpy())
    ci = tj.compile(lambda v: F.max_pool2d(v, return_indices=True, **kw))(x)
    np.testing.assert_array_equal(ci[0].numpy(), to.numpy())
    np.testing.assert_array_equal(ci[1].numpy(), ti.numpy())
    m = nn.MaxPool2d(return_indices=True, **kw)
    np.testing.assert_array_equal(m(tj.tensor(x))[1].numpy(), ti.numpy())


def test_pool_modules_and_unbatched_input():
    x = _pool_input(np.float64)
    for tm, m in ((torch.nn.MaxPool2d(3, 2, 1), nn.MaxPool2d(3, 2, 1)),
                  (torch.nn.AvgPool2d(2, count_include_pad=False, padding=1),
                   nn.AvgPool2d(2, count_include_pad=False, padding=1)),
                  (torch.nn.AdaptiveAvgPool2d((2, 3)), nn.AdaptiveAvgPool2d((2, 3)))):
        _close(m(tj.tensor(x)), tm(torch.tensor(x)), 1e-12)
        _close(m(tj.tensor(x[0])), tm(torch.tensor(x[0])), 1e-12)
    assert nn.MaxPool2d(3).stride == 3


def test_pool_errors_name_the_op_and_line():
    x = tj.tensor(np.zeros((1, 2, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"max_pool2d.*half of effective kernel.*test_conv_pool"):
        F.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match=r"avg_pool2d.*too small.*test_conv_pool"):
        F.avg_pool2d(x, 5)
    with pytest.raises(ValueError, match=r"max_pool2d.*4-D.*test_conv_pool"):
        F.max_pool2d(tj.tensor(np.zeros((4, 4), np.float32)), 2)


# -- Conv2d ------------------------------------------------------------------------------------
CONVS = [
    dict(in_channels=3, out_channels=4, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=1,
         dilation=(1, 2), groups=2),
    dict(in_channels=4, out_channels=4, kernel_size=4, padding="same", groups=4, bias=False),
    dict(in_channels=4, out_channels=2, kernel_size=1, padding="valid"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", CONVS, ids=[str(i) for i in range(len(CONVS))])
def test_conv2d_module_matches_torch(kw, dtype):
    torch.manual_seed(0)
    tm = torch.nn.Conv2d(**kw).to(torch.float64 if dtype == np.float64 else torch.float32)
    m = nn.Conv2d(**kw, dtype=tj.float64 if dtype == np.float64 else None)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((2, kw["in_channels"], 7, 6)).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = tm(tx)
    (ty ** 2).sum().backward()
    X = tj.tensor(x, requires_grad=True)
    y = m(X)
    (y ** 2).sum().backward()
    tol = TOL[dtype] * 10
    _close(y, ty, tol)
    _close(X.grad, tx.grad, tol)
    for name, p in m.named_parameters():
        _close(p.grad, dict(tm.named_parameters())[name].grad, tol)
    cm = tj.compile(m)
    _close(cm(x), ty, tol)
    assert repr(m) == repr(tm)


def test_conv2d_default_init_is_torchs():
    m = nn.Conv2d(8, 16, 3)
    bound = 1 / math.sqrt(8 * 9)            # kaiming_uniform_(a=sqrt(5)) and the bias bound
    for p in (m.weight, m.bias):
        v = p.detach().numpy()
        assert np.abs(v).max() <= bound and np.abs(v).max() > 0.9 * bound
        assert abs(v.std() - bound / math.sqrt(3)) < 0.25 * bound
    assert m.weight.shape == (16, 8, 3, 3) and m.weight.dtype == tj.float32
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        nn.Conv2d(3, 4, 3, padding_mode="reflection")   # (reflect: test_conv_padding_modes.py)


# -- BatchNorm ---------------------------------------------------------------------------------
BNS = [
    ("BatchNorm2d", dict(num_features=3), (4, 3, 5, 6)),
    ("BatchNorm2d", dict(num_features=3, momentum=None), (4, 3, 5, 6)),
    ("BatchNorm2d", dict(num_features=3, affine=False, momentum=0.3, eps=1e-3), (2, 3, 2, 2)),
    ("BatchNorm2d", dict(num_features=3, track_running_stats=False), (4, 3, 5, 6)),
    ("BatchNorm1d", dict(num_features=5), (8, 5)),
    ("BatchNorm1d", dict(num_features=5, momentum=None), (3, 5, 7)),
]


def _bn_pair(name, kw, dtype):
    tm = getattr(torch.nn, name)(**kw).to(torch.float64 if dtype == np.float64 else torch.float32)
    m = getattr(nn, name)(**kw, dtype=tj.float64 if dtype == np.float64 else None)
    if tm.affine:          # non-trivial affine parameters
        with torch.no_grad():
            tm.weight.uniform_(0.5, 1.5)
            if tm.bias is not None:
                tm.bias.uniform_(-0.5, 0.5)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    return tm, m


def _check_bn_state(m, tm, tol):
    for name, b in tm.named_buffers():
        got = getattr(m, name)
        if name == "num_batches_tracked":
            assert int(got.item()) == int(b.item())
        else:
            _close(got, b, tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kw,shape", BNS, ids=[str(i) for i in range(len(BNS))])
def test_batchnorm_running_stats_then_eval_match_torch(name, kw, shape, dtype):
    torch.manual_seed(0)
    tm, m = _bn_pair(name, kw, dtype)
    tol = TOL[dtype] * 10
    rng = np.random.default_rng(3)
    for step in range(3):
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
        tx = torch.tensor(x, requires_grad=True)
        ty = tm(tx)
        (ty * ty * torch.tensor(np.arange(ty.numel()).reshape(ty.shape) % 5, dtype=ty.dtype)
         ).sum().backward()
        X = tj.tensor(x, requires_grad=True)
        y = m(X)
        (y * y * tj.tensor(np.arange(y.numel()).reshape(y.shape) % 5, dtype=y.dtype)
         ).sum().backward()
        _close(y, ty, tol)
        _close(X.grad, tx.grad, tol * 10)
        for pn, p in m.named_parameters():
            _close(p.grad, dict(tm.named_parameters())[pn].grad, tol * 10)
        _check_bn_state(m, tm, tol)
    tm.eval()
    m.eval()
    x = rng.standard_normal(shape).astype(dtype)
    _close(m(tj.tensor(x)), tm(torch.tensor(x)), tol)
    _close(tj.compile(m)(x), tm(torch.tensor(x)), tol)
    _check_bn_state(m, tm, tol)           # eval leaves the statistics alone
    assert repr(m) == repr(tm)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_compiled_batchnorm_updates_running_stats_as_eager(momentum):
    torch.manual_seed(0)
    tm, m = _bn_pair("BatchNorm2d", dict(num_features=3, momentum=momentum), np.float64)
    cm = tj.compile(m)
    rng = np.random.default_rng(4)
    for step in range(3):
        x = rng.standard_normal((4, 3, 3, 5)) + step
        _close(cm(x), tm(torch.tensor(x)), 1e-11)
        _check_bn_state(m, tm, 1e-11)


def test_compiled_module_with_batchnorm_backward_matches_torch():
    """tj.compile(model) in training mode: the call writes the running statistics back, and
    backward() through its result still runs (the write-back is not an in-place change of a
    tensor saved for backward)."""
    torch.manual_seed(0)
    tm, m = _bn_pair("BatchNorm2d", dict(num_features=3, bias=False), np.float64)
    cm = tj.compile(m)
    rng = np.random.default_rng(7)
    for _ in range(2):
        x = rng.standard_normal((4, 3, 2, 5))
        tx, X = torch.tensor(x, requires_grad=True), tj.tensor(x, requires_grad=True)
        (tm(tx) ** 3).sum().backward()
        (cm(X) ** 3).sum().backward()
        _close(X.grad, tx.grad, 1e-10)
        _close(m.weight.grad, tm.weight.grad, 1e-10)
        _check_bn_state(m, tm, 1e-12)
    assert m.bias is None


def test_functional_batch_norm_and_errors():
    x = np.random.default_rng(5).standard_normal((4, 3, 2, 2))
    rm, rv = np.zeros(3), np.ones(3)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    want = TF.batch_norm(torch.tensor(x), trm, trv, training=True, momentum=0.2)
    rmt, rvt = tj.tensor(rm), tj.tensor(rv)
    _close(F.batch_norm(tj.tensor(x), rmt, rvt, training=True, momentum=0.2), want, 1e-12)
    _close(rmt, trm, 1e-12)
    _close(rvt, trv, 1e-12)
    with pytest.raises(ValueError, match=r"batch_norm.*more than 1 value.*test_conv_pool"):
        F.batch_norm(tj.tensor(np.zeros((1, 3))), None, None, training=True)
    with pytest.raises(ValueError, match=r"batch_norm.*running_mean must have shape"):
        F.batch_norm(tj.tensor(x), tj.tensor(np.zeros(2)), tj.tensor(np.ones(2)))
    with pytest.raises(ValueError, match="expected 4-D input"):
        nn.BatchNorm2d(3)(tj.tensor(np.zeros((2, 3))))


# -- a small CNN -------------------------------------------------------------------------------
def _cnn(lib):
    n = lib.nn if lib is torch else nn
    return n.Sequential(n.Conv2d(3, 8, 3, padding=1), n.BatchNorm2d(8), n.ReLU(),
                        n.MaxPool2d(2), n.Conv2d(8, 8, 3, stride=2, padding="valid", groups=2),
                        n.BatchNorm2d(8), n.ReLU(), n.AvgPool2d(2, ceil_mode=True),
                        n.AdaptiveAvgPool2d(1), n.Flatten(), n.Linear(8, 5))


@pytest.mark.parametrize("mode", ["eager", "compiled"])
def test_small_cnn_loss_and_grads_match_torch(mode):
    torch.manual_seed(0)
    tm = _cnn(torch).double()
    m = _cnn(tj).to(tj.float64)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 3, 12, 12))
    y = rng.integers(0, 5, 4)
    tl = TF.cross_entropy(tm(torch.tensor(x)), torch.tensor(y))
    tl.backward()
    def step(x, y):
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        return loss

    # compiled: forward, backward and the running-statistics updates in one graph
    loss = (tj.compile(step) if mode == "compiled" else step)(tj.tensor(x), tj.tensor(y))
    np.testing.assert_allclose(loss.item(), tl.item(), rtol=1e-11)
    tp = dict(tm.named_parameters())
    for name, p in m.named_parameters():
        _close(p.grad, tp[name].grad, 1e-10)
    for name, b in tm.named_buffers():
        if name.endswith("num_batches_tracked"):
            assert int(m.get_buffer(name).item()) == 1
        else:
            _close(m.get_buffer(name), b, 1e-11)
