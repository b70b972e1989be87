"""torch idioms of conv-net code that tracejit lacked: memory formats (`x.contiguous(
memory_format=tj.channels_last)`, `model.to(memory_format=...)`, `zeros_like(...,
memory_format=...)`), `is_contiguous()` on views, the Tensor queries is_floating_point /
is_complex / nelement / ndimension / element_size, in-place sigmoid_/relu_/log_/... (values and
gradients through them), reciprocal, and torch.std_mean / var_mean. All against torch."""
import copy
import pickle

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

X = np.random.default_rng(0).standard_normal((2, 3, 4, 5))


def test_memory_formats_are_accepted_and_keep_the_values():
    x, tx = tj.tensor(X), torch.tensor(X)
    for fmt in ("channels_last", "contiguous_format", "preserve_format"):
        f, tf = getattr(tj, fmt), getattr(torch, fmt)
        for got, want in [(x.contiguous(memory_format=f), tx.contiguous(memory_format=tf)),
                          (x.to(memory_format=f), tx.to(memory_format=tf)),
                          (x.clone(memory_format=f), tx.clone(memory_format=tf)),
                          (tj.zeros_like(x, memory_format=f) + x,
                           torch.zeros_like(tx, memory_format=tf) + tx)]:
            np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert tj.randn_like(x, memory_format=tj.channels_last).shape == x.shape
    conv = tj.nn.Conv2d(3, 4, 3).to(memory_format=tj.channels_last)
    assert conv(x.float()).shape == (2, 4, 2, 3)
    assert isinstance(tj.channels_last, tj.memory_format)
    assert pickle.loads(pickle.dumps(tj.channels_last)) is tj.channels_last
    assert copy.deepcopy(tj.preserve_format) is tj.preserve_format


VIEWS = [lambda t: t, lambda t: t.transpose(1, 2), lambda t: t.permute(0, 2, 3, 1),
         lambda t: t.permute(0, 2, 3, 1).contiguous(), lambda t: t[:, :1],
         lambda t: t[:1], lambda t: t[:, :, ::2], lambda t: t[0, 1], lambda t: t[..., 1:],
         lambda t: t.unsqueeze(1), lambda t: t[:, 1:2, :, 2:3], lambda t: t.narrow(3, 0, 5),
         lambda t: t.flatten(2).transpose(1, 2)[:, :1], lambda t: t[:, 0, 0].t()]


def test_is_contiguous_of_views_as_torch():
    x, tx = tj.tensor(X), torch.tensor(X)
    got = [v(x).is_contiguous() for v in VIEWS]
    want = [v(tx).is_contiguous() for v in VIEWS]
    assert got == want
    assert x.is_contiguous(memory_format=tj.contiguous_format)
    with pytest.raises(NotImplementedError, match="channels_last"):
        x.is_contiguous(memory_format=tj.channels_last)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16", "int64",
                                   "int32", "bool"])
def test_tensor_queries_as_torch(dtype):
    x = tj.zeros(2, 3, dtype=getattr(tj, dtype))
    tx = torch.zeros(2, 3, dtype=getattr(torch, dtype))
    for q in ("is_floating_point", "is_complex", "nelement", "ndimension", "element_size"):
        assert getattr(x, q)() == getattr(tx, q)(), q
    assert tj.is_floating_point(x) == torch.is_floating_point(tx)
    assert tj.is_complex(x) == torch.is_complex(tx)


INPLACE = ["sigmoid_", "relu_", "log_", "sin_", "cos_", "erf_", "sign_", "rsqrt_", "square_",
           "reciprocal_"]


@pytest.mark.parametrize("name", INPLACE)
def test_inplace_methods_as_torch_with_gradients(name):
    a = X[0] + (3.0 if name in ("log_", "rsqrt_") else 0.0)      # (positive where needed)

    def run(lib):
        leaf = lib.tensor(a, requires_grad=True)
        y = leaf * 1.5
        view = y[:, 1:]
        out = getattr(view, name)()                  # writes through into y
        assert out is view
        (y * y).sum().backward()
        return y.detach().numpy(), leaf.grad.numpy()
    for g, w in zip(run(tj), run(torch)):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


def test_reciprocal_as_torch():
    for v in ([1, 2, 4], [0.5, -2.0, 0.0], [True, False]):
        got, want = tj.reciprocal(tj.tensor(v)), torch.reciprocal(torch.tensor(v))
        assert got.numpy().dtype == want.numpy().dtype
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    np.testing.assert_array_equal(tj.tensor([2.0, 4.0]).reciprocal().numpy(), [0.5, 0.25])


@pytest.mark.parametrize("fn", ["std_mean", "var_mean"])
@pytest.mark.parametrize("args,kw", [((), {}), ((1,), dict(keepdim=True)),
                                     (((2, 3),), dict(correction=0)), ((False,), {}),
                                     (([0, 2],), dict(unbiased=False, keepdim=True))])
def test_std_mean_var_mean_as_torch(fn, args, kw):
    def run(lib):
        x = lib.tensor(X, requires_grad=True)
        s, m = getattr(lib, fn)(x, *args, **kw)
        (s.sum() * 2 + (m * m).sum()).backward()
        return s.detach().numpy(), m.detach().numpy(), x.grad.numpy()
    for g, w in zip(run(tj), run(torch)):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
