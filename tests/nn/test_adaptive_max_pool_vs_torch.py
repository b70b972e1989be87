"""F.adaptive_max_pool1d/2d and AdaptiveMaxPool1d/2d against torch: values, indices and input
gradients (float64 and float32; eagerly and with forward+backward compiled) for windows that
tile the plane and windows of uneven size, ties (the gradient goes to torch's one element),
a NaN, None sizes, unbatched, empty batch and empty output; errors like torch's."""
import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional
TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-6, atol=1e-6)}

CASES = [  # name, input shape, output_size, how the input is made
    ("adaptive_max_pool2d", (2, 3, 7, 5), (3, 2), "normal"),         # uneven windows
    ("adaptive_max_pool2d", (2, 3, 7, 5), (3, 2), "ties"),
    ("adaptive_max_pool2d", (2, 3, 7, 5), (4, 4), "ties"),           # overlapping windows
    ("adaptive_max_pool2d", (2, 3, 6, 4), (3, 2), "ties"),           # windows that tile
    ("adaptive_max_pool2d", (2, 3, 7, 5), 1, "ties"),                # global
    ("adaptive_max_pool2d", (2, 3, 7, 5), (None, 2), "normal"),
    ("adaptive_max_pool2d", (2, 3, 7, 5), (3, 2), "nan"),
    ("adaptive_max_pool2d", (3, 7, 5), (3, 4), "normal"),            # unbatched
    ("adaptive_max_pool2d", (0, 3, 7, 5), (3, 2), "normal"),         # empty batch
    ("adaptive_max_pool1d", (2, 3, 15), 4, "ties"),
    ("adaptive_max_pool1d", (2, 3, 15), 5, "ties"),
    ("adaptive_max_pool1d", (3, 10), 7, "normal"),                   # unbatched
    ("adaptive_max_pool1d", (1, 2, 6), 9, "normal"),                 # output > input
]
IDS = [f"{c[0][-2:]}-{i}-{c[3]}" for i, c in enumerate(CASES)]


def _input(shape, kind, dtype):
    x = np.random.default_rng(0).standard_normal(shape)
    if kind == "ties":
        x = np.maximum(np.round(x), 0)              # many equal maxima (ReLU-like zeros)
    elif kind == "nan" and x.size:
        x.flat[7] = np.nan
    return x.astype(dtype)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled_step"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name,shape,size,kind", CASES, ids=IDS)
def test_values_indices_and_grads_match_torch(name, shape, size, kind, dtype, compiled):
    x = _input(shape, kind, dtype)
    want_shape = tuple(getattr(TF, name)(torch.tensor(x), size).shape)
    up = np.random.default_rng(1).standard_normal(want_shape).astype(dtype)
    res = []
    for lib, lib_f in ((torch, TF), (tj, F)):
        t = lib.tensor(x, requires_grad=True)

        def step():
            out, idx = getattr(lib_f, name)(t, size, return_indices=True)
            (out * lib.tensor(up)).sum().backward()
            return out, idx
        out, idx = (tj.compile(step) if compiled and lib is tj else step)()
        res.append((out.detach().numpy(), idx.numpy(), t.grad.numpy()))
    (got, gi, gg), (want, wi, wg) = res[1], res[0]
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, equal_nan=True, **TOL[dtype])
    np.testing.assert_array_equal(gi, wi)
    assert gi.dtype == wi.dtype == np.int64
    np.testing.assert_allclose(gg, wg, **TOL[dtype])


def test_empty_output_as_torch_with_a_zero_gradient():
    """torch pools to a 0-sized output but cannot differentiate it; the gradient is zeros."""
    x = _input((1, 2, 4, 4), "normal", np.float64)
    want, wi = TF.adaptive_max_pool2d(torch.tensor(x), (0, 3), return_indices=True)
    X = tj.tensor(x, requires_grad=True)
    got, gi = F.adaptive_max_pool2d(X, (0, 3), return_indices=True)
    assert got.shape == tuple(want.shape) and gi.shape == tuple(wi.shape) == (1, 2, 0, 3)
    got.sum().backward()
    np.testing.assert_array_equal(X.grad.numpy(), np.zeros_like(x))


@pytest.mark.parametrize("make,shape", [
    (lambda nn: nn.AdaptiveMaxPool2d((3, 2)), (2, 3, 7, 5)),
    (lambda nn: nn.AdaptiveMaxPool2d((None, 2), return_indices=True), (2, 3, 7, 5)),
    (lambda nn: nn.AdaptiveMaxPool1d(4), (2, 3, 9)),
    (lambda nn: nn.AdaptiveMaxPool1d(4, return_indices=True), (3, 9)),
])
def test_modules_match_torch(make, shape):
    tmod, mod = make(torch.nn), make(tj.nn)
    assert repr(mod) == repr(tmod)
    x = _input(shape, "ties", np.float64)
    want, got = tmod(torch.tensor(x)), tj.compile(mod)(tj.tensor(x))
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        np.testing.assert_array_equal(g.numpy(), w.numpy())


HERE = "test_adaptive_max_pool_vs_torch.py"
ERRORS = [
    (lambda f, t: f.adaptive_max_pool2d(t(3, 4), 2),
     r"adaptive_max_pool2d: expects a 3-D \(C, H, W\) or 4-D \(N, C, H, W\) input, got "
     r"f64\[3, 4\]"),
    (lambda f, t: f.adaptive_max_pool2d(t(2, 3, 0, 4), 2),
     r"adaptive_max_pool2d: cannot pool input f64\[2, 3, 0, 4\] to output size \(2, 2\)"),
    (lambda f, t: f.adaptive_max_pool2d(t(1, 3, 4, 4), (1, 2, 3)),
     r"adaptive_max_pool2d: output_size must be an int or 2 ints"),
    (lambda f, t: f.adaptive_max_pool1d(t(2, 3, 4, 4), 2),
     r"adaptive_max_pool1d: expects a 2-D \(C, L\) or 3-D \(N, C, L\) input, got "
     r"f64\[2, 3, 4, 4\]"),
]


@pytest.mark.parametrize("i", range(len(ERRORS)))
def test_bad_input_raises_like_torch(i):
    call, pattern = ERRORS[i]
    with pytest.raises(RuntimeError):
        call(TF, lambda *s: torch.zeros(s, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=pattern + ".*" + HERE):
        call(F, lambda *s: tj.zeros(*s, dtype=tj.float64))
