"""F.conv1d / max_pool1d / avg_pool1d / adaptive_avg_pool1d / group_norm and the modules
Conv1d, MaxPool1d, AvgPool1d, AdaptiveAvgPool1d, GroupNorm against torch: values and input,
weight and bias gradients (float64, eagerly and under tj.compile), reprs and state_dict keys,
errors that name the 1-D op, and a small 1-D CNN (Conv1d, GroupNorm, ReLU, MaxPool1d,
AdaptiveAvgPool1d, Linear) trained three SGD steps as torch."""
import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional
TOL = dict(rtol=1e-10, atol=1e-12)

CASES = [  # name, input shape, weight/param shapes, keyword arguments
    ("conv1d", (2, 4, 9), [(6, 4, 3), (6,)], {}),
    ("conv1d", (2, 4, 9), [(6, 2, 3)], dict(stride=2, padding=2, dilation=2, groups=2)),
    ("conv1d", (4, 7), [(3, 4, 4), (3,)], dict(padding="same")),        # unbatched, even k
    ("conv1d", (1, 3, 5), [(2, 3, 5)], dict(padding="valid")),
    ("conv1d", (0, 3, 5), [(2, 3, 2), (2,)], {}),                         # empty batch
    ("max_pool1d", (2, 3, 10), [], dict(kernel_size=3, stride=2, padding=1)),
    ("max_pool1d", (3, 7), [], dict(kernel_size=2, ceil_mode=True)),
    ("avg_pool1d", (2, 3, 10), [], dict(kernel_size=3, stride=2, padding=1,
                                        count_include_pad=False)),
    ("avg_pool1d", (2, 3, 7), [], dict(kernel_size=2, ceil_mode=True)),
    ("adaptive_avg_pool1d", (2, 3, 10), [], dict(output_size=4)),
    ("adaptive_avg_pool1d", (3, 5), [], dict(output_size=7)),
    ("group_norm", (3, 6, 5), [(6,), (6,)], dict(num_groups=3)),
    ("group_norm", (2, 4, 3, 2), [(4,), (4,)], dict(num_groups=2, eps=1e-3)),
    ("group_norm", (2, 6), [], dict(num_groups=6)),
    ("group_norm", (1, 4, 1), [(4,), (4,)], dict(num_groups=1)),
]


def _call(lib_f, name, x, params, kw):
    if name == "group_norm":
        kw = dict(kw)
        return lib_f.group_norm(x, kw.pop("num_groups"), *params, **kw)
    return getattr(lib_f, name)(x, *params, **kw)


@pytest.mark.filterwarnings("ignore:Using padding='same'")      # torch's note on even kernels
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name,shape,pshapes,kw", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_functional_values_and_grads_match_torch(name, shape, pshapes, kw, compiled):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in [shape] + pshapes]
    up = None
    results = []
    for lib, lib_f in ((torch, TF), (tj, F)):
        ts = [lib.tensor(a, requires_grad=True) for a in arrays]
        fn = (lambda *t: _call(lib_f, name, t[0], t[1:], kw))
        out = (tj.compile(fn) if compiled and lib is tj else fn)(*ts)
        if up is None:
            up = rng.standard_normal(tuple(out.shape))
        (out * lib.tensor(up)).sum().backward()
        results.append([out.detach().numpy()] + [t.grad.numpy() for t in ts])
    for got, want in zip(results[1], results[0]):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, **TOL)


def test_max_pool1d_indices_are_torchs():
    x = np.random.default_rng(1).standard_normal((2, 3, 11))
    v, i = F.max_pool1d(tj.tensor(x), 3, stride=2, padding=1, return_indices=True)
    tv, ti = TF.max_pool1d(torch.tensor(x), 3, stride=2, padding=1, return_indices=True)
    np.testing.assert_array_equal(i.numpy(), ti.numpy())
    np.testing.assert_array_equal(v.numpy(), tv.numpy())


@pytest.mark.parametrize("make", [
    lambda nn: nn.Conv1d(4, 8, 3), lambda nn: nn.Conv1d(4, 8, 3, 2, 1, 2, 2, False),
    lambda nn: nn.Conv1d(4, 8, 4, padding="same"), lambda nn: nn.MaxPool1d(2),
    lambda nn: nn.MaxPool1d(3, 2, 1), lambda nn: nn.AvgPool1d(3, 2, 1),
    lambda nn: nn.AdaptiveAvgPool1d(4), lambda nn: nn.GroupNorm(2, 4),
    lambda nn: nn.GroupNorm(4, 4, eps=1e-3, affine=False),
    lambda nn: nn.GroupNorm(1, 4, bias=False)])
def test_modules_repr_state_and_forward_match_torch(make):
    tmod, mod = make(torch.nn).double(), make(tj.nn).double()
    assert repr(mod) == repr(tmod)
    sd = {k: v.detach().numpy() for k, v in tmod.state_dict().items()}
    assert list(mod.state_dict()) == list(sd)
    mod.load_state_dict(sd)
    x = np.random.default_rng(2).standard_normal((2, 4, 9))
    with torch.no_grad():
        want = tmod(torch.tensor(x)).numpy()
    np.testing.assert_allclose(mod(tj.tensor(x)).detach().numpy(), want, **TOL)


def test_default_initialisation_follows_torchs_rules():
    tj.manual_seed(0)
    conv = tj.nn.Conv1d(8, 16, 5)
    bound = 1 / np.sqrt(8 * 5)                 # kaiming_uniform_(a=sqrt(5)): U(+-1/sqrt(fan_in))
    for p in (conv.weight, conv.bias):
        v = p.detach().numpy()
        assert np.all(np.abs(v) <= bound) and v.std() > bound / 3
    gn = tj.nn.GroupNorm(2, 6)
    assert (gn.weight.detach().numpy() == 1).all() and (gn.bias.detach().numpy() == 0).all()


def test_bad_arguments_name_the_1d_op():
    x = tj.zeros(2, 4, 9)
    with pytest.raises(RuntimeError, match=r"conv1d: input f32\[2, 4, 9\] has 4 channels.*"
                       r"test_conv1d_groupnorm.py"):
        F.conv1d(x, tj.zeros(6, 3, 3))
    with pytest.raises(ValueError, match=r"conv1d: expects a 2-D \(C, L\) or 3-D"):
        F.conv1d(tj.zeros(2, 4, 9, 1), tj.zeros(6, 4, 3))
    with pytest.raises(ValueError, match="conv1d: padding='same' is not supported for strided"):
        F.conv1d(x, tj.zeros(6, 4, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match="max_pool1d: kernel_size must be an int or a 1-tuple"):
        F.max_pool1d(x, (2, 2))
    with pytest.raises(RuntimeError, match="group_norm: expected number of channels"):
        F.group_norm(x, 3)
    with pytest.raises(ValueError, match=r"GroupNorm: num_channels \(6\) must be divisible"):
        tj.nn.GroupNorm(4, 6)


def make_net(lib):
    nn = lib.nn
    return nn.Sequential(
        nn.Conv1d(2, 8, kernel_size=5, padding=2, bias=False), nn.GroupNorm(4, 8), nn.ReLU(),
        nn.MaxPool1d(2), nn.Conv1d(8, 8, 3, padding="same"), nn.GroupNorm(2, 8), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 3))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled_step"])
def test_1d_cnn_trains_as_torch(compiled):
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((4, 2, 16)) for _ in range(3)]
    ys = [rng.integers(0, 3, 4) for _ in range(3)]
    torch.manual_seed(0)
    tnet, net = make_net(torch).double(), make_net(tj).double()
    net.load_state_dict({k: v.detach().numpy() for k, v in tnet.state_dict().items()})
    runs = []
    for lib, model in ((torch, tnet), (tj, net)):
        opt = lib.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

        def step(x, y):
            opt.zero_grad()
            loss = lib.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss
        if compiled and lib is tj:
            step = tj.compile(step)
        losses = [step(lib.tensor(x), lib.tensor(y)).item() for x, y in zip(xs, ys)]
        runs.append((losses, {k: v.detach().numpy() for k, v in model.state_dict().items()}))
    np.testing.assert_allclose(runs[1][0], runs[0][0], **TOL)
    for k, want in runs[0][1].items():
        np.testing.assert_allclose(runs[1][1][k], want, err_msg=k, **TOL)
