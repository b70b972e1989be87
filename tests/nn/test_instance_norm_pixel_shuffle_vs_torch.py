"""F.instance_norm, F.pixel_shuffle, F.pixel_unshuffle and the modules InstanceNorm1d/2d,
PixelShuffle, PixelUnshuffle against torch: values and gradients (float64, float32; eagerly and
with forward+backward compiled), running statistics in training then eval, reprs, state_dict
names, and errors that name the op and shapes."""
import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional
TOL = {np.float64: dict(rtol=1e-10, atol=1e-11), np.float32: dict(rtol=3e-5, atol=3e-5)}

CASES = [  # name, input shape, parameter shapes, keyword arguments
    ("pixel_shuffle", (2, 8, 3, 5), [], dict(upscale_factor=2)),
    ("pixel_shuffle", (2, 3, 9, 2, 2), [], dict(upscale_factor=3)),        # extra lead dim
    ("pixel_shuffle", (1, 4, 2, 2), [], dict(upscale_factor=2)),   # (torch fails batch 0)
    ("pixel_unshuffle", (2, 3, 4, 6), [], dict(downscale_factor=2)),
    ("pixel_unshuffle", (3, 6, 3), [], dict(downscale_factor=3)),           # unbatched
    ("instance_norm", (2, 4, 3, 5), [], {}),
    ("instance_norm", (2, 4, 7), [(4,), (4,)], dict(eps=1e-3)),            # weight, bias
    ("instance_norm", (1, 3, 2, 2, 3), [(3,), (3,)], {}),                  # 3 spatial dims
    ("instance_norm", (0, 3, 4, 4), [], {}),
]
IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


def _call(lib_f, name, x, params, kw):
    if name == "instance_norm" and params:
        return lib_f.instance_norm(x, None, None, *params, **kw)
    return getattr(lib_f, name)(x, *params, **kw)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled_step"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name,shape,pshapes,kw", CASES, ids=IDS)
def test_values_and_grads_match_torch(name, shape, pshapes, kw, dtype, compiled):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(dtype) for s in [shape] + pshapes]
    up = None
    res = []
    for lib, lib_f in ((torch, TF), (tj, F)):
        ts = [lib.tensor(a, requires_grad=True) for a in arrays]
        if up is None:
            up = rng.standard_normal(tuple(_call(lib_f, name, ts[0], ts[1:], kw).shape))

        def step():
            out = _call(lib_f, name, ts[0], ts[1:], kw)
            (out * lib.tensor(up.astype(dtype))).sum().backward()
            return out
        out = (tj.compile(step) if compiled and lib is tj else step)()
        res.append([out.detach().numpy()] + [t.grad.numpy() for t in ts])
    for got, want in zip(res[1], res[0]):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, **TOL[dtype])


MODULES = [
    (lambda nn: nn.InstanceNorm2d(4), (2, 4, 3, 5)),
    (lambda nn: nn.InstanceNorm2d(4, affine=True, track_running_stats=True, momentum=0.3),
     (2, 4, 3, 5)),
    (lambda nn: nn.InstanceNorm1d(4, track_running_stats=True, momentum=None), (3, 4, 6)),
    (lambda nn: nn.InstanceNorm1d(4, affine=True, eps=1e-3), (4, 6)),            # unbatched
    (lambda nn: nn.InstanceNorm2d(4, affine=True, bias=False), (4, 3, 3)),       # unbatched
    (lambda nn: nn.PixelShuffle(2), (2, 8, 3, 3)),
    (lambda nn: nn.PixelUnshuffle(2), (2, 2, 4, 6)),
]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("i", range(len(MODULES)))
def test_modules_train_then_eval_match_torch(i, compiled):
    make, shape = MODULES[i]
    tmod, mod = make(torch.nn).double(), make(tj.nn).to(tj.float64)
    assert repr(mod) == repr(tmod)
    sd = {k: v.detach().numpy() for k, v in tmod.state_dict().items()}
    assert list(mod.state_dict()) == list(sd)
    rng = np.random.default_rng(3)
    for k, v in sd.items():            # parameters other than the default ones and zeros
        if v.dtype == np.float64:
            sd[k] = v + rng.uniform(0.1, 0.5, v.shape)
    tmod.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
    mod.load_state_dict(sd)
    run = tj.compile(mod) if compiled else mod
    for training in (True, True, False):
        tmod.train(training)
        mod.train(training)
        x = rng.standard_normal(shape)
        tx, X = torch.tensor(x, requires_grad=True), tj.tensor(x, requires_grad=True)
        ty, y = tmod(tx), run(X)
        (ty ** 3).sum().backward()
        (y ** 3).sum().backward()
        np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), **TOL[np.float64])
        np.testing.assert_allclose(X.grad.numpy(), tx.grad.numpy(), **TOL[np.float64])
        for k, want in tmod.state_dict().items():
            np.testing.assert_allclose(mod.state_dict()[k].numpy(), want.numpy(), err_msg=k,
                                       **TOL[np.float64])
        tp = dict(tmod.named_parameters())
        for name, p in mod.named_parameters():
            np.testing.assert_allclose(p.grad.numpy(), tp[name].grad.numpy(), err_msg=name,
                                       **TOL[np.float64])


def test_functional_running_stats_and_eval_match_torch():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 5, 2))
    stats = [rng.standard_normal(4), rng.uniform(0.5, 2, 4)]
    t_rs, j_rs = [torch.tensor(s) for s in stats], [tj.tensor(s) for s in stats]
    ty = TF.instance_norm(torch.tensor(x), *t_rs, momentum=0.2)
    y = F.instance_norm(tj.tensor(x), *j_rs, momentum=0.2)
    np.testing.assert_allclose(y.numpy(), ty.numpy(), **TOL[np.float64])
    for j, t in zip(j_rs, t_rs):
        np.testing.assert_allclose(j.numpy(), t.numpy(), **TOL[np.float64])
    ty = TF.instance_norm(torch.tensor(x), *t_rs, use_input_stats=False)
    y = F.instance_norm(tj.tensor(x), *j_rs, use_input_stats=False)
    np.testing.assert_allclose(y.numpy(), ty.numpy(), **TOL[np.float64])


HERE = "test_instance_norm_pixel_shuffle_vs_torch.py"
ERRORS = [  # call, the exception torch raises too, a pattern of our message
    (lambda f, t: f.pixel_shuffle(t(2, 7, 3, 3), 2), RuntimeError,
     r"pixel_shuffle: .*input.size\(-3\)=7 is not divisible by 4"),
    (lambda f, t: f.pixel_shuffle(t(4, 3), 2), RuntimeError,
     r"pixel_shuffle: .*at least 3 dimensions, but got input with 2 dimension"),
    (lambda f, t: f.pixel_unshuffle(t(2, 3, 5, 4), 2), RuntimeError,
     r"pixel_unshuffle: .*height \(5\) and width \(4\) to be divisible by downscale_factor"),
    (lambda f, t: f.instance_norm(t(2, 3, 1)), ValueError,
     r"instance_norm: Expected more than 1 spatial element when training, got input size "
     r"\[2, 3, 1\]"),
    (lambda f, t: f.instance_norm(t(2, 3, 4), None, None, t(4)), RuntimeError,
     r"instance_norm: weight must have shape \(3,\) for input f64\[2, 3, 4\], got f64\[4\]"),
    (lambda f, t: f.instance_norm(t(2, 3, 4), use_input_stats=False), RuntimeError,
     r"instance_norm: Expected running_mean and running_var to be defined"),
]


@pytest.mark.parametrize("i", range(len(ERRORS)))
def test_bad_input_raises_like_torch_naming_op_shapes_and_line(i):
    call, exc, pattern = ERRORS[i]
    with pytest.raises(exc):
        call(TF, lambda *s: torch.zeros(s, dtype=torch.float64))
    with pytest.raises(exc, match=pattern + ".*" + HERE):
        call(F, lambda *s: tj.zeros(*s, dtype=tj.float64))


def test_module_input_checks_match_torchs():
    for nn, z in ((torch.nn, torch.zeros), (tj.nn, tj.zeros)):
        with pytest.raises(ValueError, match="expected 3D or 4D input"):
            nn.InstanceNorm2d(3)(z(2, 3))
        with pytest.raises(ValueError, match=r"expected input's size at dim=1 to match "
                           r"num_features \(3\), but got: 4"):
            nn.InstanceNorm2d(3, affine=True)(z(2, 4, 2, 2))
