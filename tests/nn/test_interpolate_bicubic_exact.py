"""F.interpolate's 'bicubic' (timm's position-embedding resize, super-resolution nets),
'nearest-exact' and 'area' (adaptive average pooling) modes against torch: values and input gradients, float64 and float32, up and
down, by scale_factor and by size, with and without align_corners, eagerly and compiled; and
nn.Upsample with them."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

CASES = [((2, 3, 5, 7), dict(scale_factor=2, mode="bicubic")),
         ((2, 3, 5, 7), dict(scale_factor=2, mode="bicubic", align_corners=True)),
         ((1, 2, 6, 6), dict(size=(3, 9), mode="bicubic", align_corners=False)),
         ((1, 2, 4, 5), dict(scale_factor=1.7, mode="bicubic")),
         ((1, 2, 7, 6), dict(size=(2, 2), mode="bicubic", align_corners=True)),
         ((2, 3, 5), dict(size=8, mode="nearest-exact")),
         ((1, 2, 5, 7), dict(scale_factor=0.5, mode="nearest-exact")),
         ((1, 2, 3, 4, 5), dict(scale_factor=(2, 1.5, 0.6), mode="nearest-exact")),
         ((2, 3, 7), dict(size=3, mode="area")),
         ((1, 2, 6, 7), dict(scale_factor=(0.5, 1.0), mode="area")),
         ((1, 2, 4, 5, 6), dict(size=(2, 3, 4), mode="area"))]


def _run(lib, x, kw, compiled=False):
    F = lib.nn.functional
    x = (torch.tensor if lib is torch else tj.tensor)(x, requires_grad=True)
    f = (lambda t: F.interpolate(t, **kw))
    out = (tj.compile(f) if compiled else f)(x)
    (out * out).sum().backward()
    return out.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("shape,kw", CASES, ids=[f"{i}-{c[1]['mode']}" for i, c in
                                                 enumerate(CASES)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_interpolate_bicubic_and_nearest_exact_as_torch(shape, kw, dtype):
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(dtype)
    # (float32 gradients sum taps of size ~10 with cancellation: an absolute tolerance)
    tol = dict(rtol=1e-11, atol=1e-13) if dtype == "float64" else dict(rtol=1e-4, atol=5e-5)
    want = _run(torch, x, kw)
    runs = [_run(tj, x, kw)] + ([_run(tj, x, kw, compiled=True)] if dtype == "float32" else [])
    for got in runs:
        for g, w, what in zip(got, want, ("out", "grad")):
            assert g.shape == w.shape and g.dtype == w.dtype
            np.testing.assert_allclose(g, w, err_msg=what, **tol)


def test_upsample_module_bicubic_and_errors():
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4))
    got = tj.nn.Upsample(scale_factor=2, mode="bicubic", align_corners=True)(tj.tensor(x))
    want = torch.nn.Upsample(scale_factor=2, mode="bicubic", align_corners=True)(
        torch.tensor(x))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12, atol=1e-13)
    with pytest.raises(ValueError, match="align_corners"):
        tj.nn.functional.interpolate(tj.tensor(x), scale_factor=2, mode="nearest-exact",
                                     align_corners=False)
    with pytest.raises(ValueError, match="align_corners"):
        tj.nn.functional.interpolate(tj.tensor(x), size=2, mode="area", align_corners=True)
    with pytest.raises(NotImplementedError, match="bicubic"):
        tj.nn.functional.interpolate(tj.tensor(x[0]), scale_factor=2, mode="bicubic")
