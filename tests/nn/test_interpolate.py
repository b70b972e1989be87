"""F.interpolate ('nearest', 'linear', 'bilinear'; size or scale_factor; align_corners) and
nn.Upsample against torch: values and input gradients, eagerly and under tj.compile, for
up- and down-sampling, non-integer factors and size 1; reprs; torch's argument errors."""
import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F

torch = pytest.importorskip("torch")

CASES = [((2, 3, 5, 7), dict(scale_factor=2)), ((2, 3, 5, 7), dict(size=(4, 9))),
         ((1, 2, 6, 6), dict(size=(11, 13))), ((2, 3, 5, 7), dict(size=(8, 3), mode="bilinear")),
         ((2, 3, 5, 7), dict(scale_factor=2, mode="bilinear", align_corners=True)),
         ((2, 3, 5, 7), dict(scale_factor=1.7, mode="bilinear")),
         ((1, 1, 4, 4), dict(size=(1, 1), mode="bilinear", align_corners=True)),
         ((2, 3, 6), dict(scale_factor=0.5, mode="linear")),
         ((2, 3, 6), dict(size=10, mode="linear", align_corners=True)),
         ((2, 3, 6), dict(scale_factor=3)),
         ((2, 3, 5, 7), dict(scale_factor=(2, 0.5), mode="bilinear",
                             recompute_scale_factor=True))]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("shape,kw", CASES, ids=[str(i) for i in range(len(CASES))])
def test_interpolate_matches_torch(shape, kw, compiled):
    x = np.random.default_rng(0).standard_normal(shape)
    results = []
    for lib, lib_f in ((torch, torch.nn.functional), (tj, F)):
        xt = lib.tensor(x, requires_grad=True)
        fn = (lambda t: lib_f.interpolate(t, **kw))
        out = (tj.compile(fn) if compiled and lib is tj else fn)(xt)
        up = np.linspace(-1, 1, out.numel()).reshape(tuple(out.shape))
        (out * lib.tensor(up)).sum().backward()
        results.append([out.detach().numpy(), xt.grad.numpy()])
    for got, want in zip(results[1], results[0]):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make", [lambda nn: nn.Upsample(scale_factor=2),
                                  lambda nn: nn.Upsample(size=(4, 5), mode="bilinear"),
                                  lambda nn: nn.Upsample(scale_factor=2, mode="bilinear",
                                                         align_corners=True)])
def test_upsample_module_matches_torch(make):
    tmod, mod = make(torch.nn), make(tj.nn)
    assert repr(mod) == repr(tmod)
    x = np.random.default_rng(1).standard_normal((1, 2, 3, 3))
    np.testing.assert_allclose(mod(tj.tensor(x)).numpy(), tmod(torch.tensor(x)).numpy(),
                               rtol=1e-12, atol=1e-14)


def test_errors():
    x = tj.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match="only one of size or scale_factor"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="align_corners option can only be set"):
        F.interpolate(x, scale_factor=2, align_corners=True)
    with pytest.raises(NotImplementedError, match="interpolate: mode 'bilinear' expects a 4-D"):
        F.interpolate(tj.zeros(1, 2, 3), scale_factor=2, mode="bilinear")
    with pytest.raises(NotImplementedError, match="mode 'lanczos' is not supported"):
        F.interpolate(x, scale_factor=2, mode="lanczos")  # (bicubic, area: their own file)
