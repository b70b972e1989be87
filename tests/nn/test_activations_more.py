"""F.hardsigmoid, hardswish, selu, celu, glu, softsign, tanhshrink, softmin, threshold, prelu
and their modules, and Dropout1d/Dropout2d, against torch: values and gradients (float64,
including the breakpoints -3, 0, 3 and large inputs), eagerly and under tj.compile; reprs;
channel dropout zeroes whole channels with the right rate and scale."""
import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

CASES = [("hardsigmoid", {}), ("hardswish", {}), ("selu", {}), ("celu", dict(alpha=0.5)),
         ("glu", dict(dim=1)), ("softsign", {}), ("tanhshrink", {}), ("softmin", dict(dim=0)),
         ("threshold", dict(threshold=0.5, value=-2.0))]


def _x(shape=(4, 6)):
    x = np.random.default_rng(0).standard_normal(shape) * 3
    x.flat[:6] = (-3.0, 3.0, 0.0, -100.0, 100.0, 0.5)
    return x


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name,kw", CASES, ids=[c[0] for c in CASES])
def test_values_and_grads_match_torch(name, kw, compiled):
    x = _x()
    results = []
    for lib, lib_f in ((torch, TF), (tj, F)):
        xt = lib.tensor(x, requires_grad=True)
        fn = (lambda t: getattr(lib_f, name)(t, **kw))
        out = (tj.compile(fn) if compiled and lib is tj else fn)(xt)
        up = np.linspace(-1, 2, out.numel()).reshape(tuple(out.shape))
        (out * lib.tensor(up)).sum().backward()
        results.append([out.detach().numpy(), xt.grad.numpy()])
    # torch's hardsigmoid backward multiplies by a float32 1/6 even in float64 (3e-8 off)
    tol = dict(rtol=1e-7) if name == "hardsigmoid" else dict(rtol=1e-12, atol=1e-14)
    for got, want in zip(results[1], results[0]):
        np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("shape,wshape", [((3, 4, 5), (4,)), ((3, 4), (1,)), ((6,), (1,)),
                                          ((2, 3, 2, 2), (3,))])
def test_prelu_matches_torch(shape, wshape):
    x, w = _x(shape), np.linspace(-0.5, 0.5, wshape[0])
    results = []
    for lib, lib_f in ((torch, TF), (tj, F)):
        xt, wt = lib.tensor(x, requires_grad=True), lib.tensor(w, requires_grad=True)
        out = lib_f.prelu(xt, wt)
        (out * out).sum().backward()
        results.append([out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()])
    for got, want in zip(results[1], results[0]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make", [
    lambda nn: nn.Hardswish(), lambda nn: nn.Hardsigmoid(), lambda nn: nn.SELU(inplace=True),
    lambda nn: nn.CELU(0.5), lambda nn: nn.GLU(), lambda nn: nn.Softsign(),
    lambda nn: nn.Tanhshrink(), lambda nn: nn.Softmin(dim=1), lambda nn: nn.Threshold(0.1, 20),
    lambda nn: nn.PReLU(), lambda nn: nn.PReLU(4, init=0.1)])
def test_modules_match_torch(make):
    tmod, mod = make(torch.nn).double(), make(tj.nn).double()
    assert repr(mod) == repr(tmod)
    assert [k for k, _ in mod.named_parameters()] == [k for k, _ in tmod.named_parameters()]
    x = _x((2, 4))
    with torch.no_grad():
        want = tmod(torch.tensor(x)).numpy()
    got = mod(tj.tensor(x))
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("fn,shape", [("dropout2d", (64, 50, 3, 2)), ("dropout1d", (64, 50, 3)),
                                      ("dropout2d", (50, 3, 2))])
def test_channel_dropout_zeroes_whole_channels(fn, shape, compiled):
    p = 0.3
    f = (lambda t: getattr(F, fn)(t, p))
    out = (tj.compile(f) if compiled else f)(tj.ones(*shape, dtype=tj.float64)).numpy()
    lead = 2 if len(shape) == (4 if fn == "dropout2d" else 3) else 1
    per_channel = out.reshape(*shape[:lead], -1)
    assert np.all(per_channel == per_channel[..., :1])              # one value per channel
    values = set(np.unique(per_channel).tolist())
    assert values <= {0.0, 1 / (1 - p)}
    rate = (per_channel[..., 0] == 0).mean()
    assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / per_channel[..., 0].size)
    same = getattr(F, fn)(tj.ones(*shape), p, training=False).numpy()
    assert (same == 1).all()
    m = getattr(tj.nn, fn.capitalize())(p)
    m.eval()
    assert (m(tj.ones(*shape)).numpy() == 1).all()


def test_errors():
    with pytest.raises(RuntimeError, match=r"glu: halving dimension must be even.*f32\[3, 5\]"):
        F.glu(tj.zeros(3, 5))
    with pytest.raises(RuntimeError, match="prelu: weight f32\\[3\\] must have one entry per "
                       "channel \\(4\\)"):
        F.prelu(tj.zeros(2, 4), tj.zeros(3))
    with pytest.raises(RuntimeError, match="prelu: .* channel \\(1\\)"):
        F.prelu(tj.zeros(6), tj.zeros(6))          # torch: a 1-D input has one channel
    with pytest.raises(RuntimeError, match="dropout2d: expects a 3-D or 4-D input"):
        F.dropout2d(tj.zeros(2, 3), 0.5)
