"""nn.functional against torch.nn.functional (forward and backward, float32 and float64),
eagerly and compiled; nn.init and nn.utils."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tracejit as tj
import tracejit.nn.functional as F
from tracejit import nn
from conftest import assert_close

TOL = {"float32": (3e-5, 3e-6), "float64": (1e-11, 1e-12)}
R = np.random.default_rng(7)


def _mask(shape, p=0.5):
    m = R.random(shape) < p
    m[..., 0] = True
    return m


X = R.standard_normal((4, 6))
X[0, 0] = 0.0
Q, K, V = (R.standard_normal(s) for s in ((2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 4)))
LOGP = np.log(R.dirichlet(np.ones(6), size=4))
TGT = np.array([0, 5, -100, 2])
BOOL_MASK = _mask((5, 7))
BOOL_MASK[2] = False                         # a row with nothing to attend to
E = R.standard_normal((9, 4))
IDX = np.array([[0, 3, 8], [3, 3, 1]])

# name: (tracejit fn, torch fn, float inputs to differentiate, other (non-float) inputs)
CASES = {
    "linear": (F.linear, TF.linear, [X, R.standard_normal((3, 6)), R.standard_normal(3)], []),
    "linear_nobias": (F.linear, TF.linear, [X, R.standard_normal((3, 6))], []),
    "relu": (F.relu, TF.relu, [X], []),
    "relu6": (F.relu6, TF.relu6, [X * 4], []),
    "hardtanh": (lambda x: F.hardtanh(x, -0.3, 0.5), lambda x: TF.hardtanh(x, -0.3, 0.5), [X], []),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.3), lambda x: TF.leaky_relu(x, 0.3), [X], []),
    "elu": (F.elu, TF.elu, [X], []),
    "silu": (F.silu, TF.silu, [X], []),
    "mish": (F.mish, TF.mish, [X], []),
    "gelu": (F.gelu, TF.gelu, [X], []),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"),
                  lambda x: TF.gelu(x, approximate="tanh"), [X], []),
    "softplus": (lambda x: F.softplus(x, 2.0, 1.0), lambda x: TF.softplus(x, 2.0, 1.0), [X], []),
    "tanh": (F.tanh, TF.tanh, [X], []),
    "sigmoid": (F.sigmoid, TF.sigmoid, [X], []),
    "logsigmoid": (F.logsigmoid, TF.logsigmoid, [X * 10], []),
    "softmax": (lambda x: F.softmax(x, dim=0), lambda x: TF.softmax(x, dim=0), [X], []),
    "log_softmax": (lambda x: F.log_softmax(x, -1), lambda x: TF.log_softmax(x, -1), [X], []),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (6,), w, b),
                   lambda x, w, b: TF.layer_norm(x, (6,), w, b),
                   [X, R.standard_normal(6), R.standard_normal(6)], []),
    "layer_norm_2d": (lambda x: F.layer_norm(x, (4, 6), eps=1e-3),
                      lambda x: TF.layer_norm(x, (4, 6), eps=1e-3), [X], []),
    "rms_norm": (lambda x, w: F.rms_norm(x, [6], w), lambda x, w: TF.rms_norm(x, [6], w),
                 [X, R.standard_normal(6)], []),
    "normalize": (F.normalize, TF.normalize, [np.vstack([X, np.zeros((1, 6))])], []),
    "normalize_p1_dim0": (lambda x: F.normalize(x, 1.0, 0), lambda x: TF.normalize(x, 1.0, 0),
                          [X], []),
    "normalize_p3": (lambda x: F.normalize(x, 3.0, -1), lambda x: TF.normalize(x, 3.0, -1),
                     [X], []),
    "embedding": (lambda w, i: F.embedding(i, w), lambda w, i: TF.embedding(i, w), [E], [IDX]),
    "embedding_pad": (lambda w, i: F.embedding(i, w, padding_idx=3),
                      lambda w, i: TF.embedding(i, w, padding_idx=3), [E], [IDX]),
    "dropout_eval": (lambda x: F.dropout(x, 0.4, training=False),
                     lambda x: TF.dropout(x, 0.4, training=False), [X], []),
    "cross_entropy": (lambda x, t: F.cross_entropy(x, t, ignore_index=-100),
                      lambda x, t: TF.cross_entropy(x, t, ignore_index=-100), [X], [TGT]),
    "cross_entropy_smooth": (lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1,
                                                          reduction="sum"),
                             lambda x, t: TF.cross_entropy(x, t, label_smoothing=0.1,
                                                           reduction="sum"), [X], [TGT]),
    "nll_loss": (F.nll_loss, TF.nll_loss, [LOGP], [TGT]),
    "nll_loss_none": (lambda x, t: F.nll_loss(x, t, reduction="none"),
                      lambda x, t: TF.nll_loss(x, t, reduction="none"), [LOGP], [TGT]),
    "nll_loss_3d": (lambda x, t: F.nll_loss(x, t, ignore_index=1),
                    lambda x, t: TF.nll_loss(x, t, ignore_index=1),
                    [LOGP.reshape(2, 2, 6).transpose(0, 2, 1)], [np.array([[0, 1], [2, 3]])]),
    "mse_loss": (F.mse_loss, TF.mse_loss, [X, R.standard_normal((4, 6))], []),
    "mse_loss_sum": (lambda a, b: F.mse_loss(a, b, reduction="sum"),
                     lambda a, b: TF.mse_loss(a, b, reduction="sum"),
                     [X, R.standard_normal((4, 6))], []),
    "l1_loss": (F.l1_loss, TF.l1_loss, [X, R.standard_normal((4, 6))], []),
    "bce_logits": (F.binary_cross_entropy_with_logits, TF.binary_cross_entropy_with_logits,
                   [X * 30, R.random((4, 6))], []),
    "pad_constant": (lambda x: F.pad(x, (1, 2), value=-1.5), lambda x: TF.pad(x, (1, 2), value=-1.5),
                     [X], []),
    "pad_crop": (lambda x: F.pad(x, (-1, 2, 1, -2)), lambda x: TF.pad(x, (-1, 2, 1, -2)),
                 [X], []),
    "pad_reflect": (lambda x: F.pad(x, (2, 3, 1, 1), mode="reflect"),
                    lambda x: TF.pad(x, (2, 3, 1, 1), mode="reflect"), [X[None]], []),
    "pad_replicate": (lambda x: F.pad(x, (2, 3, 1, 0), mode="replicate"),
                      lambda x: TF.pad(x, (2, 3, 1, 0), mode="replicate"), [X[None]], []),
    "pad_circular": (lambda x: F.pad(x, (2, 3, 1, 4), mode="circular"),
                     lambda x: TF.pad(x, (2, 3, 1, 4), mode="circular"), [X[None, None]], []),
    "sdpa": (F.scaled_dot_product_attention, TF.scaled_dot_product_attention, [Q, K, V], []),
    "sdpa_causal": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                    lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True),
                    [Q, K, V], []),
    "sdpa_bool_mask": (lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
                       lambda q, k, v, m: TF.scaled_dot_product_attention(q, k, v, attn_mask=m),
                       [Q, K, V], [BOOL_MASK]),
    "sdpa_float_mask": (F.scaled_dot_product_attention, TF.scaled_dot_product_attention,
                        [Q, K, V, R.standard_normal((5, 7))], []),
    "sdpa_scale": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.05),
                   lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, scale=0.05),
                   [Q, K, V], []),
    "sdpa_gqa": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                 lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                 [Q, K[:, :1], V[:, :1]], []),
}


def _inputs(lib, floats, others, dtype):
    if lib is torch:
        fl = [torch.tensor(a, dtype=getattr(torch, dtype), requires_grad=True) for a in floats]
        return fl, fl + [torch.tensor(a) for a in others]
    fl = [tj.tensor(a, dtype=getattr(tj, dtype), requires_grad=True) for a in floats]
    return fl, fl + [tj.tensor(a) for a in others]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(CASES))
def test_functional_matches_torch(name, dtype):
    fn, tfn, floats, others = CASES[name]
    tfl, targs = _inputs(torch, floats, others, dtype)
    fl, args = _inputs(tj, floats, others, dtype)
    tout, out = tfn(*targs), fn(*args)
    rtol, atol = TOL[dtype]
    assert out.dtype is getattr(tj, dtype)
    assert_close(out, tout.detach().numpy(), rtol, atol)
    w = R.standard_normal(tuple(tout.shape))
    (tout * torch.tensor(w, dtype=getattr(torch, dtype))).sum().backward()
    (out * tj.tensor(w, dtype=getattr(tj, dtype))).sum().backward()
    for a, ta in zip(fl, tfl):
        assert_close(a.grad, ta.grad.numpy(), rtol, atol)


@pytest.mark.parametrize("name", list(CASES))
def test_functional_compiled_matches_eager(name):
    fn, _, floats, others = CASES[name]
    fl, args = _inputs(tj, floats, others, "float64")
    out = fn(*args)
    w = tj.tensor(R.standard_normal(tuple(out.shape)))
    grads = tj.grad(lambda *a: (fn(*a) * w).sum(), argnums=tuple(range(len(fl))))(*args)
    cfn = tj.compile(fn)
    assert_close(cfn(*args), out, 1e-12, 1e-12)
    cgrads = tj.grad(lambda *a: (cfn(*a) * w).sum(), argnums=tuple(range(len(fl))))(*args)
    for g, cg in zip(grads, cgrads):
        assert_close(cg, g, 1e-11, 1e-12)


def test_softmax_implicit_dim_warns_and_picks_torchs_dim():
    x = R.standard_normal((2, 3, 4))
    with pytest.warns(UserWarning, match="Implicit dimension"):
        y = F.softmax(tj.tensor(x))
    with pytest.warns(UserWarning):
        ty = TF.softmax(torch.tensor(x))
    assert_close(y, ty.numpy(), 1e-12, 1e-12)


def test_dropout_functional_and_inplace():
    x = tj.ones(100, 100)
    y = F.dropout(x, 0.5)
    assert 0.45 < (y.numpy() == 0).mean() < 0.55 and set(np.unique(y.numpy())) == {0.0, 2.0}
    z = tj.ones(10, 10)
    assert F.dropout(z, 0.5, inplace=True) is z and (z.numpy() != 1).all()
    w = tj.ones(3)
    assert F.dropout(w, 0.5, training=False, inplace=True) is w and (w.numpy() == 1).all()
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(x, 1.5)


def test_one_hot():
    t = np.array([[0, 3], [2, 1]])
    assert_close(F.one_hot(tj.tensor(t)), TF.one_hot(torch.tensor(t)).numpy())
    assert F.one_hot(tj.tensor(t), 6).shape == (2, 2, 6)
    assert F.one_hot(tj.tensor(t)).dtype is tj.int64
    f = tj.compile(lambda i: F.one_hot(i, 5))
    assert_close(f(tj.tensor(t)), np.eye(5, dtype=np.int64)[t])
    with pytest.raises(RuntimeError, match=r"one_hot: Class values must be in \[0, 3\)"):
        F.one_hot(tj.tensor(t), 3)
    with pytest.raises(TypeError, match="int64"):
        F.one_hot(tj.tensor([1.0]))


def test_pad_and_sdpa_errors_name_the_op():
    x = tj.ones(2, 3)
    with pytest.raises(ValueError, match=r"pad: padding \[1, 2, 3\] must have an even length"):
        F.pad(x, (1, 2, 3))
    with pytest.raises(ValueError, match="reflect mode"):
        F.pad(x, (3, 0), mode="reflect")
    with pytest.raises(NotImplementedError, match="pad: mode must be"):
        F.pad(x, (1, 1), mode="wrap")
    q = tj.ones(1, 2, 4)
    with pytest.raises(RuntimeError, match="attn_mask should not be set when is_causal"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=tj.ones(2, 2), is_causal=True)
    with pytest.raises(ValueError, match="linear: input f32\\[2, 3\\] does not match weight"):
        F.linear(x, tj.ones(2, 4))
    assert "test_functional.py" in _message(lambda: F.linear(x, tj.ones(2, 4)))


def _message(fn) -> str:
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        return str(e)
    return ""


def test_sdpa_dropout_keeps_expectation():
    q = tj.tensor(R.standard_normal((1, 1, 4, 8)))
    tj.manual_seed(3)
    outs = [F.scaled_dot_product_attention(q, q, q, dropout_p=0.5).numpy() for _ in range(400)]
    exact = F.scaled_dot_product_attention(q, q, q).numpy()
    assert np.abs(np.mean(outs, 0) - exact).max() < 0.15


# -- nn.utils ------------------------------------------------------------------------------
def _grads_pair(dtype):
    shapes = [(3, 4), (5,), (2, 2, 2)]
    gs = [R.standard_normal(s) * 3 for s in shapes]
    ours = [nn.Parameter(tj.zeros(*s, dtype=getattr(tj, dtype))) for s in shapes]
    theirs = [torch.nn.Parameter(torch.zeros(*s, dtype=getattr(torch, dtype))) for s in shapes]
    for p, tp, g in zip(ours, theirs, gs):
        p.grad = tj.tensor(g, dtype=getattr(tj, dtype))
        tp.grad = torch.tensor(g, dtype=getattr(torch, dtype))
    extra = nn.Parameter(tj.ones(2))              # no grad: ignored
    return ours + [extra], theirs


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("norm_type,max_norm", [(2.0, 1.0), (2.0, 1e6), (1.0, 2.0),
                                                (math.inf, 0.5), (3.0, 1.5), ("inf", 0.5)])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, dtype):
    ours, theirs = _grads_pair(dtype)
    total = nn.utils.clip_grad_norm_(ours, max_norm, norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    rtol, atol = TOL[dtype]
    assert isinstance(total, tj.Tensor) and total.shape == ()
    assert_close(total, ttotal.numpy(), rtol, atol)
    for p, tp in zip(ours, theirs):
        assert_close(p.grad, tp.grad.numpy(), rtol, atol)
    assert ours[-1].grad is None


def test_clip_grad_norm_nonfinite_and_single_tensor():
    p = nn.Parameter(tj.ones(3))
    p.grad = tj.tensor([3.0, 4.0, 0.0])
    assert_close(nn.utils.clip_grad_norm_(p, 1.0), 5.0)
    assert_close(p.grad, np.array([3.0, 4.0, 0.0]) / (5 + 1e-6), 1e-6)
    p.grad = tj.tensor([float("inf"), 1.0, 0.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert float(nn.utils.clip_grad_norm_([], 1.0)) == 0.0


def test_clip_grad_norm_inside_a_compiled_function():
    def clipped(g):
        p = nn.Parameter(tj.zeros(4, dtype=tj.float64))
        p.grad = g * 1.0
        n = nn.utils.clip_grad_norm_([p], 1.0)
        return n, p.grad
    g = tj.tensor(R.standard_normal(4) * 5)
    n, cg = tj.compile(clipped)(g)
    en, eg = clipped(g)
    assert_close(n, en, 1e-12, 1e-12)
    assert_close(cg, eg, 1e-12, 1e-12)


def test_clip_grad_value_and_vectors():
    ours, theirs = _grads_pair("float64")
    nn.utils.clip_grad_value_(ours, 0.7)
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for p, tp in zip(ours, theirs):
        assert_close(p.grad, tp.grad.numpy())
    ps = [nn.Parameter(tj.tensor(R.standard_normal(s))) for s in ((2, 3), (4,))]
    vec = nn.utils.parameters_to_vector(ps)
    assert vec.shape == (10,)
    assert_close(vec, np.concatenate([p.detach().numpy().ravel() for p in ps]))
    nn.utils.vector_to_parameters(vec * 2, ps)
    assert_close(nn.utils.parameters_to_vector(ps), vec * 2)


# -- nn.init -------------------------------------------------------------------------------
def test_init_bounds_and_moments():
    w = tj.empty(300, 200)
    assert nn.init.uniform_(w, -2.0, 3.0) is w
    a = w.numpy()
    assert a.min() >= -2 and a.max() < 3 and abs(a.mean() - 0.5) < 0.05
    nn.init.normal_(w, 1.0, 2.0)
    assert abs(w.numpy().mean() - 1) < 0.03 and abs(w.numpy().std() - 2) < 0.03
    nn.init.constant_(w, 0.25)
    assert (w.numpy() == 0.25).all()
    nn.init.ones_(w), nn.init.zeros_(w)
    assert (w.numpy() == 0).all()
    bound = math.sqrt(6 / 500)
    nn.init.xavier_uniform_(w)
    assert np.abs(w.numpy()).max() <= bound and np.abs(w.numpy()).max() > 0.99 * bound
    nn.init.xavier_normal_(w, gain=2.0)
    assert abs(w.numpy().std() - 2 * math.sqrt(2 / 500)) < 0.003
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))       # torch's Linear: U(±1/sqrt(fan_in))
    assert np.abs(w.numpy()).max() <= 1 / math.sqrt(200)
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert abs(w.numpy().std() - math.sqrt(2 / 300)) < 0.002
    nn.init.trunc_normal_(w, 0.5, 1.0, -1.0, 1.0)
    a = w.numpy()
    assert a.min() >= -1 and a.max() <= 1 and abs(a.mean() - 0.5 - _trunc_mean(0.5)) < 0.02
    q = tj.empty(6, 4)
    nn.init.orthogonal_(q)
    assert_close(q.numpy().T @ q.numpy(), np.eye(4), 1e-5, 1e-5)
    nn.init.eye_(q)
    assert_close(q, np.eye(6, 4))


def _trunc_mean(mu):
    # mean offset of N(mu, 1) truncated to [-1, 1]
    from statistics import NormalDist
    nd = NormalDist()
    a, b = -1 - mu, 1 - mu
    return (nd.pdf(a) - nd.pdf(b)) / (nd.cdf(b) - nd.cdf(a))


def test_init_conv_fans_gain_and_errors():
    assert nn.init.calculate_gain("relu") == torch.nn.init.calculate_gain("relu")
    assert nn.init.calculate_gain("leaky_relu", 0.2) == \
        torch.nn.init.calculate_gain("leaky_relu", 0.2)
    assert nn.init.calculate_gain("tanh") == torch.nn.init.calculate_gain("tanh")
    w = tj.empty(16, 8, 3, 3)                          # a conv weight: fan_in = 8 * 9
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    assert np.abs(w.numpy()).max() <= 1 / math.sqrt(72)
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init.xavier_uniform_(tj.empty(3))
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        nn.init.calculate_gain("bogus")
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        nn.init.kaiming_normal_(w, mode="fan_avg")


def test_init_is_in_place_without_grad_and_seeded():
    p = nn.Parameter(tj.zeros(5, 5))
    nn.init.normal_(p)
    assert p.requires_grad and p.grad_fn is None and p.is_leaf
    tj.manual_seed(11)
    a = nn.init.uniform_(tj.empty(4)).numpy().copy()
    tj.manual_seed(11)
    assert (nn.init.uniform_(tj.empty(4)).numpy() == a).all()
    g = tj.Generator(tj.device("cpu"), 5)
    b = nn.init.normal_(tj.empty(4), generator=g).numpy().copy()
    g.manual_seed(5)
    assert (nn.init.normal_(tj.empty(4), generator=g).numpy() == b).all()
    d = nn.init.normal_(tj.empty(3, dtype=tj.float64))
    assert d.dtype is tj.float64


def test_trunc_normal_inverse_cdf_is_accurate():
    from statistics import NormalDist
    from tracejit.nn.init import _ndtri
    p = np.concatenate([np.geomspace(1e-300, 1e-3, 60), np.linspace(1e-3, 1 - 1e-3, 2001),
                        1 - np.geomspace(1e-15, 1e-3, 60)])
    ref = np.array([NormalDist().inv_cdf(v) for v in p])
    got = _ndtri(p)
    nz = ref != 0
    assert np.max(np.abs(got[nz] - ref[nz]) / np.abs(ref[nz])) < 2e-9
    w = nn.init.trunc_normal_(tj.empty(200, 100), std=0.02)     # timm/ViT-style use
    a = w.numpy()
    assert np.abs(a).max() <= 2.0 and abs(a.std() - 0.02) < 0.001


def test_clip_grad_norm_error_if_nonfinite_inside_compile_is_an_error():
    def step(g):
        p = nn.Parameter(tj.zeros(3))
        p.grad = g * 1.0
        return nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError, match="needs a concrete value"):
        tj.compile(step)(tj.ones(3))
    assert_close(step(tj.ones(3)), math.sqrt(3))
