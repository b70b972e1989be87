"""nn.Bilinear / F.bilinear, F.max_pool1d/2d_with_indices and nn.MaxUnpool1d/2d /
F.max_unpool1d/2d against torch: values and gradients of every input (weight and bias too),
float64 and float32, eager and under tj.compile, batch 0 / 1 / extra batch dims / unbatched,
output_size, overlapping pooling windows (duplicate indices), reprs and errors."""
import numpy as np
import pytest
import torch

import tracejit as tj
import tracejit.nn.functional as F

TOL = {"float64": (1e-11, 1e-12), "float32": (2e-5, 2e-6)}


def _check(res, dtype):
    for got, want in zip(*res[::-1]):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, *TOL[dtype])


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("lead,bias", [((4,), True), ((1,), False), ((2, 3), True),
                                       ((0,), True), ((), True)])
def test_bilinear_matches_torch(lead, bias, dtype, compiled):
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal(lead + (3,)), rng.standard_normal(lead + (5,))
    torch.manual_seed(0)
    tm = torch.nn.Bilinear(3, 5, 4, bias=bias).to(getattr(torch, dtype))
    m = tj.nn.Bilinear(3, 5, 4, bias=bias).to(getattr(tj, dtype))
    assert repr(m) == repr(tm)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    res = []
    for lib, mod in ((torch, tm), (tj, m)):
        a, b = (lib.tensor(v, dtype=getattr(lib, dtype), requires_grad=True) for v in (x1, x2))
        fn = (lambda p, q: mod(p, q))
        out = (tj.compile(fn) if compiled and lib is tj else fn)(a, b)
        up = np.linspace(0.5, 1.5, out.numel()).reshape(tuple(out.shape))
        (out * lib.tensor(up, dtype=getattr(lib, dtype))).sum().backward()
        res.append([out.detach().numpy(), a.grad.numpy(), b.grad.numpy()] +
                   [p.grad.numpy() for p in mod.parameters()])
    _check(res, dtype)


def test_bilinear_init_and_errors():
    m = tj.nn.Bilinear(4, 2, 3)
    assert np.abs(m.weight.detach().numpy()).max() <= 0.5 and m.weight.shape == (3, 4, 2)
    assert np.abs(m.weight.detach().numpy()).std() > 0.05
    with pytest.raises(RuntimeError, match=r"bilinear: input1 .* and input2 .* must have"):
        m(tj.randn(2, 4), tj.randn(2, 3))
    with pytest.raises(RuntimeError):
        torch.nn.Bilinear(4, 2, 3)(torch.randn(2, 4), torch.randn(2, 3))


POOL = [(1, (2, 3, 8), dict(kernel_size=2)), (1, (1, 2, 9), dict(kernel_size=3, stride=2,
                                                                    padding=1)),
        (2, (2, 3, 6, 6), dict(kernel_size=2)), (2, (1, 2, 7, 5), dict(kernel_size=3, stride=2,
                                                                         padding=1)),
        (2, (3, 6, 6), dict(kernel_size=2)), (1, (3, 8), dict(kernel_size=2)),
        (2, (0, 2, 4, 4), dict(kernel_size=2))]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("k,shape,kw", POOL, ids=[str(i) for i in range(len(POOL))])
def test_pool_with_indices_and_unpool_match_torch(k, shape, kw, dtype, compiled):
    x = np.random.default_rng(1).permutation(np.prod(shape)).reshape(shape) * 0.1
    res = []
    for lib, lf, nn in ((torch, torch.nn.functional, torch.nn), (tj, F, tj.nn)):
        xt = lib.tensor(x, dtype=getattr(lib, dtype), requires_grad=True)
        unpool = getattr(nn, f"MaxUnpool{k}d")(**kw)

        def fn(t):
            out, idx = getattr(lf, f"max_pool{k}d_with_indices")(t, **kw)
            return out, idx, unpool(out * 2.0, idx, output_size=t.shape[-k:])
        pooled, idx, back = (tj.compile(fn) if compiled and lib is tj else fn)(xt)
        up = np.linspace(0.5, 1.5, back.numel()).reshape(tuple(back.shape))
        (back * lib.tensor(up, dtype=getattr(lib, dtype))).sum().backward()
        res.append([pooled.detach().numpy(), idx.numpy(), back.detach().numpy(),
                    xt.grad.numpy()])
    assert repr(unpool) == repr(getattr(torch.nn, f"MaxUnpool{k}d")(**kw))
    _check(res, dtype)


def test_unpool_default_size_duplicates_and_errors():
    # overlapping windows (stride 1 < kernel 2): an input element may be the max of two
    # windows; torch writes the same value twice at one place
    x = np.random.default_rng(2).standard_normal((1, 1, 5, 5))
    tout, tidx = torch.nn.functional.max_pool2d(torch.tensor(x), 2, 1, return_indices=True)
    out, idx = F.max_pool2d_with_indices(tj.tensor(x), 2, 1)
    assert len(np.unique(tidx.numpy())) < tidx.numel()           # duplicates happen here
    want = torch.nn.functional.max_unpool2d(tout, tidx, 2, 1)    # default size (4 + 1)
    got = F.max_unpool2d(out, idx, 2, 1)
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    with pytest.raises(ValueError, match=r"max_unpool2d: invalid output_size"):
        F.max_unpool2d(out, idx, 2, 1, output_size=(9, 9))
    with pytest.raises(RuntimeError, match=r"max_unpool1d: indices .* must be an integer"):
        F.max_unpool1d(tj.randn(1, 2, 3), tj.zeros(1, 2, 4, dtype=tj.int64), 2)
    with pytest.raises(Exception, match=r"out of (bounds|range)"):
        F.max_unpool1d(tj.randn(1, 1, 2), tj.tensor([[[0, 9]]]), 2)
