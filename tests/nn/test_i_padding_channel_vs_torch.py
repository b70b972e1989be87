"""Padding modules (Zero/Constant/Reflection/Replication/CircularPad 1d and 2d),
UpsamplingNearest2d / UpsamplingBilinear2d, Softmax2d, ChannelShuffle and F.channel_shuffle
against torch: values and input gradients, float64 and float32, eager and under tj.compile,
batched / unbatched / batch 1 / batch 0 inputs, negative (cropping) padding, reprs, errors."""
import numpy as np
import pytest
import torch

import tracejit as tj
import tracejit.nn.functional as F

TOL = {"float64": (1e-12, 1e-13), "float32": (1e-5, 1e-6)}

PADS = [("ZeroPad1d", (2,)), ("ZeroPad1d", ((1, 3),)), ("ZeroPad2d", ((1, 2, 0, 3),)),
        ("ConstantPad1d", ((2, -1), 3.5)), ("ConstantPad2d", (1, -2.0)),
        ("ReflectionPad1d", ((3, 1),)), ("ReflectionPad2d", ((1, 0, 2, 3),)),
        ("ReflectionPad2d", (-1,)), ("ReplicationPad1d", ((4, 0),)),
        ("ReplicationPad2d", (2,)), ("CircularPad1d", ((4, 2),)),
        ("CircularPad2d", ((1, -1, 0, 4),))]


def _compare(make, x, dtype, compiled, grad=True):
    rtol, atol = TOL[dtype]
    tmod, mod = make(torch.nn), make(tj.nn)
    assert repr(mod) == repr(tmod)
    tx = torch.tensor(x, dtype=getattr(torch, dtype), requires_grad=grad)
    jx = tj.tensor(x, dtype=getattr(tj, dtype), requires_grad=grad)
    tout = tmod(tx)
    out = (tj.compile(lambda a: mod(a)) if compiled else mod)(jx)
    assert tuple(out.shape) == tuple(tout.shape)
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), rtol, atol)
    if grad:
        up = np.linspace(-1, 2, tout.numel()).reshape(tuple(tout.shape))
        (tout * torch.tensor(up, dtype=tx.dtype)).sum().backward()
        (out * tj.tensor(up, dtype=jx.dtype)).sum().backward()
        np.testing.assert_allclose(jx.grad.numpy(), tx.grad.numpy(), rtol, atol)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch", ["N3", "N1", "unbatched", "N0"])
@pytest.mark.parametrize("name,args", PADS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(PADS)])
def test_padding_modules_match_torch(name, args, batch, dtype, compiled):
    k = 2 if name.endswith("2d") else 1
    spatial = (5, 6)[:k]
    lead = {"N3": (3, 2), "N1": (1, 2), "unbatched": (2,), "N0": (0, 2)}[batch]
    x = np.random.default_rng(0).standard_normal(lead + spatial)
    _compare(lambda nn: getattr(nn, name)(*args), x, dtype, compiled)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("make,shape", [
    (lambda nn: nn.UpsamplingNearest2d(scale_factor=2), (2, 3, 4, 5)),
    (lambda nn: nn.UpsamplingNearest2d(size=(7, 3)), (1, 2, 4, 5)),
    (lambda nn: nn.UpsamplingBilinear2d(scale_factor=3), (2, 1, 3, 4)),
    (lambda nn: nn.UpsamplingBilinear2d(size=(5, 9)), (1, 2, 4, 1)),
    (lambda nn: nn.UpsamplingBilinear2d(scale_factor=2), (0, 2, 3, 3)),
    (lambda nn: nn.Softmax2d(), (2, 3, 4, 5)),
    (lambda nn: nn.Softmax2d(), (3, 4, 5)),
    (lambda nn: nn.Softmax2d(), (0, 3, 2, 2)),
    (lambda nn: nn.ChannelShuffle(2), (2, 4, 3)),
    (lambda nn: nn.ChannelShuffle(3), (1, 6, 2, 2)),
    (lambda nn: nn.ChannelShuffle(1), (2, 3, 4)),
    (lambda nn: nn.ChannelShuffle(2), (2, 4, 2, 3, 2)),
    (lambda nn: nn.ChannelShuffle(2), (0, 4, 3)),
])
def test_upsampling_softmax2d_shuffle_match_torch(make, shape, dtype, compiled):
    x = np.random.default_rng(1).standard_normal(shape)
    _compare(make, x, dtype, compiled)


def test_channel_shuffle_functional_and_integer():
    x = np.arange(2 * 6 * 3).reshape(2, 6, 3)
    want = torch.nn.functional.channel_shuffle(torch.tensor(x), 3).numpy()
    got = F.channel_shuffle(tj.tensor(x), 3)
    assert got.dtype == tj.int64
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("make,shape,exc,msg", [
    (lambda nn: nn.ReflectionPad1d(2), (5,), ValueError, r"expected 2D or 3D input \(got 1D"),
    (lambda nn: nn.ReplicationPad2d(2), (5, 5), ValueError, r"expected 3D or 4D input"),
    (lambda nn: nn.CircularPad1d(1), (2, 3, 4, 5), ValueError, r"expected 2D or 3D input"),
    (lambda nn: nn.ReflectionPad1d(4), (1, 3, 4), ValueError, r"less than"),
    (lambda nn: nn.ReflectionPad1d(1), (1, 0, 4), RuntimeError, r"non-zero dimensions"),
    (lambda nn: nn.ReplicationPad1d(1), (1, 3, 0), RuntimeError, r"non-zero dimensions"),
    (lambda nn: nn.CircularPad1d(5), (1, 3, 4), ValueError, r"(wrap|wrapping) around"),
    (lambda nn: nn.ZeroPad2d(1), (5,), ValueError, r"[Pp]adding"),
    (lambda nn: nn.Softmax2d(), (5, 5), ValueError, r"Softmax2d: expected input to be 3D or 4D"),
    (lambda nn: nn.ChannelShuffle(2), (2, 5, 3), RuntimeError, r"divisible by groups. Got 5"),
    (lambda nn: nn.ChannelShuffle(0), (2, 4, 3), RuntimeError, r"must be positive"),
    (lambda nn: nn.ChannelShuffle(2), (4, 2), RuntimeError, r"> 2 dims"),
    (lambda nn: nn.UpsamplingBilinear2d(scale_factor=2), (2, 4, 3), NotImplementedError, "bilinear.*4-D"),
])
def test_errors_like_torch(make, shape, exc, msg):
    x = np.zeros(shape)
    with pytest.raises(Exception):          # torch raises too (maybe with another type)
        make(torch.nn)(torch.tensor(x))
    with pytest.raises(exc, match=msg):
        make(tj.nn)(tj.tensor(x))


def test_bad_padding_tuple_and_error_location():
    with pytest.raises(ValueError, match=r"ReflectionPad2d: padding must be an int or a tuple "
                       r"of 4 ints"):
        tj.nn.ReflectionPad2d((1, 2))
    with pytest.raises(ValueError, match=r"test_i_padding_channel_vs_torch.py"):
        tj.nn.ReflectionPad1d(1)(tj.zeros(3))


@pytest.mark.parametrize("pad", [(-1, 2), (2, -1), (3, -2), (-4, 2), (-2, -1), (1, -1, -2, 3)])
def test_f_pad_circular_crops_before_wrapping_like_torch(pad):
    # torch crops the negative sides first, then wraps within what is left (the start tree
    # wrapped within the whole input: silently different values)
    x = np.random.default_rng(2).standard_normal((1, 2, 5, 6)[len(pad) == 2:])
    want = torch.nn.functional.pad(torch.tensor(x), pad, mode="circular").numpy()
    np.testing.assert_array_equal(F.pad(tj.tensor(x), pad, mode="circular").numpy(), want)
    with pytest.raises(ValueError, match=r"pad: padding \(-5, 3\) can wrap around at most "
                       r"once \(input size 6 of dim \d, 1 after cropping\)"):
        F.pad(tj.tensor(x), (-5, 3), mode="circular")
