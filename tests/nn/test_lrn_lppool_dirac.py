"""nn.LocalResponseNorm / F.local_response_norm (AlexNet, GoogLeNet), nn.LPPool1d/2d /
F.lp_pool1d/2d and nn.init.dirac_, against torch: values and input gradients (3-D to 5-D
inputs, window sizes at and past the channel edges, fractional and odd powers), one compiled
case, reprs, and dirac_'s identity convolution with groups."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")


def _both(make, x, compiled=False):
    out = []
    for lib in (tj, torch):
        t = (tj.tensor if lib is tj else torch.tensor)(x, requires_grad=True)
        f = make(lib)
        y = (tj.compile(f) if compiled and lib is tj else f)(t)
        (y * y).sum().backward()
        out.append((y.detach().numpy(), t.grad.numpy()))
    return out


@pytest.mark.parametrize("shape,size", [((2, 5, 3, 4), 3), ((2, 6, 7), 2), ((1, 4, 2, 3, 3), 5),
                                        ((2, 3, 4, 4), 1)])
def test_local_response_norm_as_torch(shape, size):
    x = np.random.default_rng(0).standard_normal(shape)
    got, want = _both(lambda L: L.nn.LocalResponseNorm(size, alpha=0.3, beta=0.6, k=1.5), x,
                      compiled=size == 3)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-13)
    assert repr(tj.nn.LocalResponseNorm(size)) == repr(torch.nn.LocalResponseNorm(size))


@pytest.mark.parametrize("p,k,s", [(2, 2, None), (3, (2, 3), 1), (1.5, 3, 2)])
def test_lp_pool_as_torch(p, k, s):
    x = np.abs(np.random.default_rng(1).standard_normal((2, 3, 7, 8))) + 0.1
    got, want = _both(lambda L: L.nn.LPPool2d(p, k, s), x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-13)
    k1 = k if isinstance(k, int) else k[0]
    got, want = _both(lambda L: (lambda t: L.nn.functional.lp_pool1d(t, p, k1, s)), x[:, :, 0])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("shape,groups", [((4, 4, 3, 3), 1), ((6, 2, 3), 2), ((4, 3, 3, 3, 3), 1),
                                          ((2, 5, 5, 5), 1)])
def test_dirac_as_torch(shape, groups):
    got = tj.nn.init.dirac_(tj.empty(*shape), groups).numpy()
    want = torch.nn.init.dirac_(torch.empty(*shape), groups).numpy()
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="3, 4, or 5 dimensions"):
        tj.nn.init.dirac_(tj.empty(3, 3))
