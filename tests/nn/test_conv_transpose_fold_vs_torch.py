"""F.conv_transpose1d/2d, F.unfold, F.fold and the modules ConvTranspose1d/2d, Unfold, Fold
against torch: values and input, weight and bias gradients in float64 and float32, eagerly, with
tj.compile around the forward, and with the whole forward+backward compiled; stride, padding,
output_padding (also past the padding), dilation, groups, batch 1 and 0, unbatched and
non-contiguous inputs; reprs, state_dict names and default init; errors that name the op and
shapes as torch raises them; a small DCGAN generator trained three SGD steps as torch."""
import math

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional
TOL = {np.float64: dict(rtol=1e-10, atol=1e-11), np.float32: dict(rtol=2e-5, atol=2e-5)}

CASES = [  # name, input shape, weight/bias shapes, keyword arguments
    ("conv_transpose2d", (2, 4, 5, 3), [(4, 3, 3, 2), (3,)], {}),
    ("conv_transpose2d", (2, 4, 5, 3), [(4, 3, 3, 2), (3,)],
     dict(stride=2, padding=1, output_padding=1)),
    ("conv_transpose2d", (2, 4, 5, 3), [(4, 3, 3, 2)],               # output_padding > padding
     dict(stride=3, output_padding=2, dilation=2)),
    ("conv_transpose2d", (2, 4, 5, 3), [(4, 3, 3, 2), (6,)],
     dict(stride=2, padding=2, output_padding=1, groups=2, dilation=2)),
    ("conv_transpose2d", (2, 4, 5, 3), [(4, 1, 2, 3), (4,)],         # depthwise
     dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 0), groups=4)),
    ("conv_transpose2d", (1, 3, 4, 4), [(3, 2, 3, 3), (2,)],         # output_padding < dilation
     dict(stride=1, padding=1, output_padding=1, dilation=2)),
    ("conv_transpose2d", (0, 4, 3, 3), [(4, 2, 3, 3), (2,)], dict(stride=2)),      # empty batch
    ("conv_transpose2d", (4, 5, 3), [(4, 3, 2, 2), (3,)], dict(stride=2, padding=1)),  # unbatched
    ("conv_transpose1d", (2, 4, 7), [(4, 3, 3), (3,)], dict(stride=2, padding=1, output_padding=1)),
    ("conv_transpose1d", (2, 4, 7), [(4, 2, 3), (4,)],
     dict(stride=3, padding=1, output_padding=2, groups=2, dilation=2)),
    ("conv_transpose1d", (1, 2, 5), [(2, 3, 4)], {}),
    ("conv_transpose1d", (0, 2, 5), [(2, 3, 4), (3,)], dict(stride=2)),
    ("conv_transpose1d", (4, 7), [(4, 3, 3), (3,)], dict(padding=2)),              # unbatched
    ("unfold", (2, 3, 6, 7), [], dict(kernel_size=2)),
    ("unfold", (2, 3, 6, 7), [], dict(kernel_size=(2, 3), dilation=(1, 2), padding=1,
                                      stride=(2, 1))),
    ("unfold", (1, 2, 4, 4), [], dict(kernel_size=2, stride=2)),
    ("unfold", (3, 5, 5), [], dict(kernel_size=3, padding=1)),
    ("unfold", (0, 2, 4, 4), [], dict(kernel_size=2)),
    ("fold", (2, 12, 30), [], dict(output_size=(6, 7), kernel_size=2)),
    ("fold", (2, 18, 20), [], dict(output_size=(6, 7), kernel_size=(2, 3), dilation=(1, 2),
                                   padding=1, stride=(2, 1))),
    ("fold", (1, 8, 4), [], dict(output_size=4, kernel_size=2, stride=2)),          # tiles
    ("fold", (27, 25), [], dict(output_size=(5, 5), kernel_size=3, padding=1)),      # unbatched
    ("fold", (0, 8, 9), [], dict(output_size=(4, 4), kernel_size=2)),
]
IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


def _arrays(shape, pshapes, dtype, noncontig):
    rng = np.random.default_rng(0)
    # a non-contiguous input: the leaf holds the last two axes swapped and the op reads its
    # transposed view
    xs = shape[:-2] + (shape[-1], shape[-2]) if noncontig else shape
    return [rng.standard_normal(s).astype(dtype) for s in [xs] + pshapes], rng


def _run(lib, lib_f, name, arrays, kw, up, noncontig, mode):
    ts = [lib.tensor(a, requires_grad=True) for a in arrays]

    def fwd(*t):
        x = t[0].transpose(-1, -2) if noncontig else t[0]
        return getattr(lib_f, name)(x, *t[1:], **kw)

    def step(*t):
        out = fwd(*t)
        (out * lib.tensor(up)).sum().backward()
        return out

    if lib is tj and mode == "compiled_step":
        # the leaves are captures (as a model's parameters are): backward inside the compiled
        # function accumulates into their .grad
        out = tj.compile(lambda: step(*ts))()
    else:
        out = (tj.compile(fwd) if lib is tj and mode == "compiled_fwd" else fwd)(*ts)
        (out * lib.tensor(up)).sum().backward()
    return [out.detach().numpy()] + [t.grad.numpy() for t in ts]


@pytest.mark.parametrize("mode", ["eager", "compiled_fwd", "compiled_step"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name,shape,pshapes,kw", CASES, ids=IDS)
def test_values_and_grads_match_torch(name, shape, pshapes, kw, dtype, mode):
    arrays, rng = _arrays(shape, pshapes, dtype, False)
    want_out = getattr(TF, name)(torch.tensor(arrays[0]), *map(torch.tensor, arrays[1:]), **kw)
    up = rng.standard_normal(tuple(want_out.shape)).astype(dtype)
    want = _run(torch, TF, name, arrays, kw, up, False, mode)
    got = _run(tj, F, name, arrays, kw, up, False, mode)
    for g, w, what in zip(got, want, ["out", "input", "weight", "bias"]):
        assert g.shape == w.shape and g.dtype == w.dtype, what
        np.testing.assert_allclose(g, w, err_msg=what, **TOL[dtype])


@pytest.mark.parametrize("mode", ["eager", "compiled_step"])
@pytest.mark.parametrize("i", [1, 3, 9, 14, 19])
def test_non_contiguous_input_matches_torch(i, mode):
    name, shape, pshapes, kw = CASES[i]
    arrays, rng = _arrays(shape, pshapes, np.float64, True)
    up = rng.standard_normal(tuple(getattr(TF, name)(
        torch.tensor(arrays[0]).transpose(-1, -2), *map(torch.tensor, arrays[1:]),
        **kw).shape))
    want = _run(torch, TF, name, arrays, kw, up, True, mode)
    got = _run(tj, F, name, arrays, kw, up, True, mode)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, **TOL[np.float64])


def test_second_order_gradient_matches_torch():
    """The transposed convolution's VJP is conv2d's own primitives: grad of a grad works."""
    arrays, _ = _arrays((2, 4, 5, 3), [(4, 3, 3, 2)], np.float64, False)
    kw = dict(stride=2, padding=1, output_padding=1)
    res = []
    for lib, lib_f in ((torch, TF), (tj, F)):
        x, w = (lib.tensor(a, requires_grad=True) for a in arrays)
        y = lib_f.conv_transpose2d(x, w, **kw)
        gx, = lib.autograd.grad((y ** 2).sum(), x, create_graph=True)
        (gx ** 2).sum().backward()
        res.append((gx.detach().numpy(), w.grad.numpy()))
    for g, w in zip(*res[::-1]):
        np.testing.assert_allclose(g, w, **TOL[np.float64])


# -- modules ---------------------------------------------------------------------------------
MODULES = [
    lambda nn: nn.ConvTranspose2d(4, 6, 3),
    lambda nn: nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, output_padding=1,
                                  groups=2, bias=False, dilation=(1, 2)),
    lambda nn: nn.ConvTranspose1d(4, 2, 5, stride=3, padding=2, output_padding=2),
    lambda nn: nn.Unfold(2, padding=1),
    lambda nn: nn.Unfold((2, 3), dilation=2, stride=(1, 2)),
    lambda nn: nn.Fold((5, 6), 2),
    lambda nn: nn.Fold(6, (2, 3), padding=1, stride=2),
]
INPUTS = [(2, 4, 5, 4), (2, 4, 5, 4), (3, 4, 6), (2, 4, 5, 4), (2, 4, 7, 8), (2, 16, 20),
          (2, 24, 12)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("i", range(len(MODULES)))
def test_modules_repr_state_dict_and_forward_match_torch(i, dtype):
    torch.manual_seed(0)
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    tmod, mod = MODULES[i](torch.nn).to(tdt), MODULES[i](tj.nn)
    mod = mod.to(tj.float64) if dtype == np.float64 else mod
    assert repr(mod) == repr(tmod)
    sd = {k: v.detach().numpy() for k, v in tmod.state_dict().items()}
    assert list(mod.state_dict()) == list(sd)
    for k, v in mod.state_dict().items():
        assert tuple(v.shape) == sd[k].shape, k
    mod.load_state_dict(sd)
    x = np.random.default_rng(2).standard_normal(INPUTS[i]).astype(dtype)
    tx, X = torch.tensor(x, requires_grad=True), tj.tensor(x, requires_grad=True)
    ty, y = tmod(tx), mod(X)
    (ty ** 2).sum().backward()
    (y ** 2).sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), **TOL[dtype])
    np.testing.assert_allclose(X.grad.numpy(), tx.grad.numpy(), **TOL[dtype])
    tp = dict(tmod.named_parameters())
    for name, p in mod.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tp[name].grad.numpy(), err_msg=name,
                                   **TOL[dtype])
    np.testing.assert_allclose(tj.compile(mod)(tj.tensor(x)).detach().numpy(),
                               ty.detach().numpy(), **TOL[dtype])


@pytest.mark.parametrize("output_size", [[9, 8], [2, 3, 10, 7], (10, 8)])
def test_conv_transpose_output_size_picks_torchs_output_padding(output_size):
    torch.manual_seed(0)
    tm = torch.nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1).double()
    m = tj.nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1).to(tj.float64)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    x = np.random.default_rng(4).standard_normal((2, 4, 5, 4))
    want = tm(torch.tensor(x), output_size=output_size).detach().numpy()
    np.testing.assert_allclose(m(tj.tensor(x), output_size=output_size).detach().numpy(), want,
                               **TOL[np.float64])
    with pytest.raises(ValueError, match=r"ConvTranspose2d: requested an output size of "
                       r"\[11, 8\], but valid sizes range from \[9, 7\] to \[10, 8\]"):
        m(tj.tensor(x), output_size=[11, 8])
    with pytest.raises(ValueError, match="ConvTranspose2d: output_size must have 2 or 4"):
        m(tj.tensor(x), output_size=[4, 10, 8])


def test_default_initialisation_follows_torchs_rules():
    m = tj.nn.ConvTranspose2d(6, 8, 3, groups=2)
    assert m.weight.shape == (6, 4, 3, 3) and m.bias.shape == (8,)
    bound = 1 / math.sqrt(4 * 9)        # torch's fan_in of a transposed weight: out/groups * k
    for p in (m.weight, m.bias):
        v = p.detach().numpy()
        assert np.abs(v).max() <= bound and np.abs(v).max() > 0.8 * bound
    assert tj.nn.ConvTranspose1d(3, 5, 4).weight.shape == (3, 5, 4)
    with pytest.raises(ValueError, match="divisible by groups"):
        tj.nn.ConvTranspose2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="ConvTranspose2d: padding='same' is not supported"):
        tj.nn.ConvTranspose2d(3, 4, 3, padding="same")
    for nn in (torch.nn, tj.nn):
        with pytest.raises(ValueError, match='Only "zeros" padding mode is supported for '
                           "ConvTranspose1d"):
            nn.ConvTranspose1d(3, 4, 3, padding_mode="reflect")


def test_autocast_runs_in_bfloat16_as_torch():
    torch.manual_seed(0)
    tm, m = torch.nn.ConvTranspose2d(4, 3, 3, stride=2), tj.nn.ConvTranspose2d(4, 3, 3, stride=2)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 5)).astype(np.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = tm(torch.tensor(x))
    with tj.autocast("cpu", dtype=tj.bfloat16):
        got = m(tj.tensor(x))
    assert got.dtype == tj.bfloat16 and want.dtype == torch.bfloat16
    np.testing.assert_allclose(got.float().detach().numpy(), want.float().detach().numpy(),
                               rtol=2e-2, atol=2e-2)


# -- errors ----------------------------------------------------------------------------------
HERE = r"test_conv_transpose_fold_vs_torch.py"
ERRORS = [  # call, the exception type torch raises too, a pattern of our message
    (lambda f, t: f.conv_transpose2d(t(2, 5, 5, 3), t(4, 3, 3, 2)), RuntimeError,
     r"conv_transpose2d: input f64\[2, 5, 5, 3\] has 5 channels but weight "
     r"f64\[4, 3, 3, 2\] expects 4"),
    (lambda f, t: f.conv_transpose1d(t(2, 5, 7), t(4, 3, 3)), RuntimeError,
     r"conv_transpose1d: input f64\[2, 5, 7\] has 5 channels but weight f64\[4, 3, 3\] "
     r"expects 4"),
    (lambda f, t: f.conv_transpose2d(t(2, 4, 5, 3), t(4, 3, 3, 2), stride=2,
                                     output_padding=2), RuntimeError,
     r"conv_transpose2d: output padding must be smaller than either stride or dilation, but "
     r"got output_padding \(2, 2\), stride \(2, 2\)"),
    (lambda f, t: f.conv_transpose1d(t(2, 4, 5), t(4, 3, 3), output_padding=1), RuntimeError,
     r"conv_transpose1d: output padding .* output_padding \(1,\), stride \(1,\)"),
    (lambda f, t: f.conv_transpose2d(t(4, 5), t(4, 3, 3, 2)), RuntimeError,
     r"conv_transpose2d: expects a 3-D \(C, H, W\) or 4-D \(N, C, H, W\) input, got "
     r"f64\[4, 5\]"),
    (lambda f, t: f.conv_transpose1d(t(2, 4, 5, 3), t(4, 3, 3)), RuntimeError,
     r"conv_transpose1d: expects a 2-D \(C, L\) or 3-D \(N, C, L\) input, got "
     r"f64\[2, 4, 5, 3\]"),
    (lambda f, t: f.conv_transpose2d(t(2, 4, 5, 3), t(4, 3, 3)), RuntimeError,
     r"conv_transpose2d: weight must be 4-D .* got f64\[4, 3, 3\]"),
    (lambda f, t: f.conv_transpose2d(t(2, 4, 5, 3), t(4, 3, 3, 2), t(4)), RuntimeError,
     r"conv_transpose2d: bias must have shape \(3,\), got f64\[4\]"),
    (lambda f, t: f.conv_transpose2d(t(2, 6, 5, 3), t(6, 3, 3, 2), groups=4), RuntimeError,
     r"conv_transpose2d: in_channels \(6\) must be divisible by groups \(4\)"),
    (lambda f, t: f.conv_transpose2d(t(1, 4, 1, 1), t(4, 3, 1, 1), padding=1), RuntimeError,
     r"conv_transpose2d: the output size \(-1, -1\) .* too small"),
    (lambda f, t: f.unfold(t(1, 1, 2, 4, 4), 2), RuntimeError,
     r"unfold: expected a 3-D \(C, H, W\) or 4-D \(N, C, H, W\) input, got "
     r"f64\[1, 1, 2, 4, 4\]"),
    (lambda f, t: f.unfold(t(1, 2, 3, 3), 4), RuntimeError,
     r"unfold: the sliding blocks .* do not fit in input f64\[1, 2, 3, 3\]"),
    (lambda f, t: f.fold(t(1, 6, 9), (4, 4), 2), RuntimeError,
     r"fold: Expected size of input's dimension 1 to be divisible by the product of "
     r"kernel_size, but got input f64\[1, 6, 9\]"),
    (lambda f, t: f.fold(t(1, 8, 8), (4, 4), 2), RuntimeError,
     r"fold: .*calculated number of sliding blocks 3 \* 3 = 9, but got f64\[1, 8, 8\]"),
    (lambda f, t: f.fold(t(1, 2, 8, 8), (4, 4), 2), RuntimeError,
     r"fold: expected a 2-D \(C\*kH\*kW, L\) or 3-D .* got f64\[1, 2, 8, 8\]"),
]


def test_dtype_mismatch_is_refused_as_conv2d_does():
    x = tj.zeros(1, 4, 3, 3, dtype=tj.float64)
    with pytest.raises(TypeError, match=r"conv_transpose2d: input f64\[1, 4, 3, 3\] and "
                       r"weight f32\[4, 2, 3, 3\] must have the same floating dtype.*" + HERE):
        F.conv_transpose2d(x, tj.zeros(4, 2, 3, 3))
    with pytest.raises(TypeError, match=r"conv_transpose1d: bias f32\[2\] must have the "
                       r"dtype of input f64\[1, 4, 3\].*" + HERE):
        F.conv_transpose1d(tj.zeros(1, 4, 3, dtype=tj.float64),
                           tj.zeros(4, 2, 3, dtype=tj.float64), tj.zeros(2))


@pytest.mark.parametrize("i", range(len(ERRORS)))
def test_bad_input_raises_like_torch_naming_op_shapes_and_line(i):
    call, exc, pattern = ERRORS[i]
    with pytest.raises(exc):
        call(TF, lambda *s: torch.zeros(s, dtype=torch.float64))
    with pytest.raises(exc, match=pattern + ".*" + HERE):
        call(F, lambda *s: tj.zeros(*s, dtype=tj.float64))


# -- a small DCGAN generator -----------------------------------------------------------------
def _generator(nn, nz=6):
    return nn.Sequential(
        nn.ConvTranspose2d(nz, 16, 4, 1, 0, bias=False), nn.BatchNorm2d(16), nn.ReLU(True),
        nn.ConvTranspose2d(16, 8, 4, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(True),
        nn.ConvTranspose2d(8, 3, 4, 2, 1, bias=False), nn.Tanh())


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled_step"])
def test_dcgan_generator_trains_as_torch(compiled):
    rng = np.random.default_rng(5)
    zs = [rng.standard_normal((4, 6, 1, 1))] * 3        # one batch, fitted three steps
    target = np.tanh(rng.standard_normal((4, 3, 16, 16)))
    torch.manual_seed(0)
    tnet, net = _generator(torch.nn).double(), _generator(tj.nn).to(tj.float64)
    net.load_state_dict({k: v.detach().numpy() for k, v in tnet.state_dict().items()})
    runs = []
    for lib, model in ((torch, tnet), (tj, net)):
        opt = lib.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

        def step(z, y):
            opt.zero_grad()
            loss = lib.nn.functional.mse_loss(model(z), y)
            loss.backward()
            opt.step()
            return loss
        if compiled and lib is tj:
            step = tj.compile(step)
        losses = [step(lib.tensor(z), lib.tensor(target)).item() for z in zs]
        runs.append((losses, {k: v.detach().numpy() for k, v in model.state_dict().items()}))
    assert runs[0][0][2] < runs[0][0][0]            # it does learn
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-10)
    for k, want in runs[0][1].items():
        np.testing.assert_allclose(runs[1][1][k], want, err_msg=k, rtol=1e-9, atol=1e-11)


def test_on_a_cuda_device_matches_torch(fake_gpu):
    """ConvTranspose2d, Unfold and Fold on a "cuda" device (the strict CuPy stand-in): the
    eager CuPy implementations agree with torch, forward and backward, and stay on the device."""
    torch.manual_seed(0)
    tnet = torch.nn.Sequential(torch.nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1,
                                                        output_padding=1, groups=1),
                               torch.nn.Unfold(2, stride=2), torch.nn.Fold((8, 8), 2, stride=2))
    net = tj.nn.Sequential(tj.nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
                           tj.nn.Unfold(2, stride=2), tj.nn.Fold((8, 8), 2, stride=2)).to("cuda")
    net.load_state_dict({k: v.detach().numpy() for k, v in tnet.state_dict().items()})
    x = np.random.default_rng(7).standard_normal((2, 3, 4, 4)).astype(np.float32)
    tx, X = torch.tensor(x, requires_grad=True), tj.tensor(x, device="cuda", requires_grad=True)
    ty, y = tnet(tx), net(X)
    assert y.device == "cuda:0"
    (ty ** 2).sum().backward()
    (y ** 2).sum().backward()
    tol = TOL[np.float32]
    np.testing.assert_allclose(y.detach().cpu().numpy(), ty.detach().numpy(), **tol)
    np.testing.assert_allclose(X.grad.cpu().numpy(), tx.grad.numpy(), **tol)
    for (name, p), q in zip(net.named_parameters(), tnet.parameters()):
        assert p.grad.device == "cuda:0", name
        np.testing.assert_allclose(p.grad.cpu().numpy(), q.grad.numpy(), err_msg=name, **tol)


def test_vmap_and_jvp_match_torch():
    """The ops are conv2d's and the window primitives, so their batching and forward-mode
    rules apply: tj.vmap over an extra leading axis and tj.jvp agree with torch."""
    rng = np.random.default_rng(8)
    xs, w = rng.standard_normal((3, 2, 4, 5, 3)), rng.standard_normal((4, 3, 3, 2))
    kw = dict(stride=2, padding=1, output_padding=1)
    y = tj.vmap(lambda x: F.conv_transpose2d(x, tj.tensor(w), **kw))(tj.tensor(xs))
    want = torch.stack([TF.conv_transpose2d(torch.tensor(x), torch.tensor(w), **kw)
                        for x in xs])
    np.testing.assert_allclose(y.numpy(), want.numpy(), **TOL[np.float64])
    y = tj.vmap(lambda x: F.fold(F.unfold(x, 2, padding=1), (5, 3), 2, padding=1))(
        tj.tensor(xs))
    want = torch.stack([TF.fold(TF.unfold(torch.tensor(x), 2, padding=1), (5, 3), 2, padding=1)
                        for x in xs])
    np.testing.assert_allclose(y.numpy(), want.numpy(), **TOL[np.float64])
    t = rng.standard_normal(xs[0].shape)
    _, got = tj.jvp(lambda x: F.conv_transpose2d(x, tj.tensor(w), **kw), (tj.tensor(xs[0]),),
                    (tj.tensor(t),))
    _, want = torch.func.jvp(lambda x: TF.conv_transpose2d(x, torch.tensor(w), **kw),
                             (torch.tensor(xs[0]),), (torch.tensor(t),))
    np.testing.assert_allclose(got.numpy(), want.numpy(), **TOL[np.float64])
