"""Every nn layer against torch.nn (CPU): forward and backward in float32 and float64, with
torch's parameters copied in through state_dict; default initialisation statistics."""
import math

import numpy as np
import pytest
import torch

import tracejit as tj
from tracejit import nn
from conftest import assert_close

TOL = {"float32": (2e-5, 2e-6), "float64": (1e-11, 1e-12)}
RNG = np.random.default_rng(1234)


def _pair(name, *args, **kwargs):
    return getattr(torch.nn, name)(*args, **kwargs), getattr(nn, name)(*args, **kwargs)


# (module name, args, kwargs, input shape or a function making the inputs)
LAYERS = [
    ("Linear", (5, 3), {}, (4, 5)),
    ("Linear", (5, 3), {"bias": False}, (2, 3, 5)),
    ("Linear", (5, 1), {}, (5,)),
    ("LayerNorm", (6,), {}, (3, 6)),
    ("LayerNorm", ((4, 6),), {"bias": False}, (2, 4, 6)),
    ("LayerNorm", (6,), {"elementwise_affine": False}, (3, 6)),
    ("LayerNorm", (6,), {"eps": 1e-3}, (1, 6)),
    ("RMSNorm", (6,), {}, (3, 6)),
    ("RMSNorm", (6,), {"eps": 1e-4}, (3, 6)),
    ("ReLU", (), {}, (4, 5)),
    ("ReLU6", (), {}, (4, 5)),
    ("Hardtanh", (-0.5, 0.7), {}, (4, 5)),
    ("LeakyReLU", (0.2,), {}, (4, 5)),
    ("ELU", (0.7,), {}, (4, 5)),
    ("GELU", (), {}, (4, 5)),
    ("GELU", (), {"approximate": "tanh"}, (4, 5)),
    ("SiLU", (), {}, (4, 5)),
    ("Mish", (), {}, (4, 5)),
    ("Softplus", (2.0, 5.0), {}, (4, 5)),
    ("Tanh", (), {}, (4, 5)),
    ("Sigmoid", (), {}, (4, 5)),
    ("LogSigmoid", (), {}, (4, 5)),
    ("Softmax", (), {"dim": 1}, (3, 4, 5)),
    ("Softmax", (), {"dim": -1}, (3, 4)),
    ("LogSoftmax", (), {"dim": 0}, (3, 4)),
    ("Flatten", (), {}, (2, 3, 4, 5)),
    ("Flatten", (0, 2), {}, (2, 3, 4, 5)),
    ("Unflatten", (1, (2, 3)), {}, (4, 6, 2)),
    ("Identity", (7,), {"unused": 1}, (3, 2)),
    ("Dropout", (0.3,), {}, (4, 5)),             # eval mode below: the identity
]


def _run(tm, m, inputs, dtype):
    tdt = getattr(torch, dtype)
    tm = tm.to(tdt)
    m = m.to(getattr(tj, dtype))
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    tm.eval(), m.eval()
    xs = [torch.tensor(a, dtype=tdt if a.dtype.kind == "f" else None,
                       requires_grad=a.dtype.kind == "f") for a in inputs]
    ys = [tj.tensor(a, dtype=getattr(tj, dtype) if a.dtype.kind == "f" else None,
                    requires_grad=a.dtype.kind == "f") for a in inputs]
    tout, out = tm(*xs), m(*ys)
    rtol, atol = TOL[dtype]
    assert out.dtype is getattr(tj, dtype) and tuple(out.shape) == tuple(tout.shape)
    assert_close(out, tout.detach().numpy(), rtol, atol)
    w = RNG.standard_normal(tuple(tout.shape))
    (tout * torch.tensor(w, dtype=tdt)).sum().backward()
    (out * tj.tensor(w, dtype=getattr(tj, dtype))).sum().backward()
    for x, y in zip(xs, ys):
        if x.grad is not None:
            assert_close(y.grad, x.grad.numpy(), rtol, atol)
    for (n, p), (tn, tp) in zip(m.named_parameters(), tm.named_parameters()):
        assert n == tn
        assert_close(p.grad, tp.grad.numpy(), rtol, atol)
    return m, ys


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,args,kwargs,shape", LAYERS,
                         ids=[f"{c[0]}{i}" for i, c in enumerate(LAYERS)])
def test_layer_matches_torch(name, args, kwargs, shape, dtype):
    if name == "Identity":
        tm, m = torch.nn.Identity(*args, **kwargs), nn.Identity(*args, **kwargs)
    else:
        tm, m = _pair(name, *args, **kwargs)
    assert repr(m) == repr(tm)
    x = RNG.standard_normal(shape)
    x.flat[0] = 0.0                        # derivative conventions at 0 (relu, leaky_relu, ...)
    _run(tm, m, [x], dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_embedding_padding_idx(dtype):
    tm, m = _pair("Embedding", 7, 4, padding_idx=-2)
    assert repr(m) == repr(tm) == "Embedding(7, 4, padding_idx=5)"
    idx = np.array([[0, 5, 3], [5, 6, 0]])
    m, _ = _run(tm, m, [idx], dtype)
    assert_close(m.weight.grad.numpy()[5], np.zeros(4))     # no gradient for padding
    assert m.weight.grad.numpy()[0].any()


def test_embedding_init_and_padding_row():
    e = nn.Embedding(2000, 50, padding_idx=3)
    w = e.weight.detach().numpy()
    assert (w[3] == 0).all()
    rest = np.delete(w, 3, axis=0)
    assert abs(rest.mean()) < 0.01 and abs(rest.std() - 1.0) < 0.01     # N(0, 1)
    with pytest.raises(AssertionError, match="Padding_idx"):
        nn.Embedding(3, 2, padding_idx=3)
    pre = nn.Embedding.from_pretrained(tj.ones(3, 2))
    assert not pre.weight.requires_grad
    assert_close(pre(tj.tensor(np.array([2]))), np.ones((1, 2)))


def test_embedding_compiled_and_errors():
    e = nn.Embedding(6, 3, padding_idx=0)
    idx = tj.tensor(np.array([[0, 1], [2, 0]]))
    f = tj.compile(lambda i: e(i))
    assert_close(f(idx), e(idx))
    (f(idx) ** 2).sum().backward()
    assert (e.weight.grad.numpy()[0] == 0).all() and e.weight.grad.numpy()[1].any()
    with pytest.raises(TypeError, match="embedding: indices must be an integer tensor"):
        e(tj.ones(2))


def test_linear_default_init_is_torchs():
    lin = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    assert w.dtype == np.float32 and w.shape == (300, 400) and b.shape == (300,)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.99 * bound
    assert abs(w.mean()) < 0.003 and abs(w.var() - bound ** 2 / 3) < 0.03 * bound ** 2
    assert lin.weight.requires_grad and lin.bias.requires_grad
    # seeded: the same parameters again after tj.manual_seed
    tj.manual_seed(7)
    a = nn.Linear(4, 3).weight.detach().numpy()
    tj.manual_seed(7)
    assert (nn.Linear(4, 3).weight.detach().numpy() == a).all()
    lin64 = nn.Linear(3, 2, dtype=tj.float64)
    assert lin64.weight.dtype is tj.float64
    with pytest.raises(TypeError, match="floating-point"):
        nn.Linear(3, 2, dtype=tj.int64)


def test_layer_norm_default_init():
    ln = nn.LayerNorm((3, 4))
    assert_close(ln.weight, np.ones((3, 4))) and None
    assert_close(ln.bias, np.zeros((3, 4)))
    assert nn.LayerNorm(4, bias=False).bias is None
    assert nn.LayerNorm(4, elementwise_affine=False).weight is None
    assert nn.LayerNorm(4).eps == 1e-5


def test_dropout_train_and_eval():
    d = nn.Dropout(0.25)
    x = tj.ones(200, 50, requires_grad=True)
    y = d(x)
    kept = y.detach().numpy() != 0
    assert 0.72 < kept.mean() < 0.78
    assert_close(y.detach().numpy()[kept], np.full(kept.sum(), 1 / 0.75))
    y.sum().backward()
    assert_close(x.grad, kept / 0.75)
    d.eval()
    assert d(x) is x
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


def test_inplace_activation_writes_into_its_input():
    x = tj.tensor([-1.0, 2.0])
    y = nn.ReLU(inplace=True)(x)
    assert y is x
    assert_close(x, [0.0, 2.0])
    leaf = tj.tensor([-1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        nn.ReLU(inplace=True)(leaf)
    h = leaf * 1.0
    out = nn.LeakyReLU(0.1, inplace=True)(h)
    out.sum().backward()
    assert_close(leaf.grad, [0.1, 1.0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["ce", "ce_smooth_weight", "ce_ignore", "ce_sum", "nll",
                                  "nll_weight", "mse", "mse_none", "l1", "bce"])
def test_loss_modules_match_torch(kind, dtype):
    x = RNG.standard_normal((6, 5))
    t = RNG.integers(0, 5, 6)
    t[1] = -1
    w = RNG.random(5) + 0.5
    cls = {"ce": ("CrossEntropyLoss", {}), "ce_sum": ("CrossEntropyLoss", {"reduction": "sum"}),
           "ce_smooth_weight": ("CrossEntropyLoss", {"label_smoothing": 0.2, "weight": w}),
           "ce_ignore": ("CrossEntropyLoss", {"ignore_index": -1}),
           "nll": ("NLLLoss", {"ignore_index": -1}),
           "nll_weight": ("NLLLoss", {"weight": w, "ignore_index": -1}),
           "mse": ("MSELoss", {}), "mse_none": ("MSELoss", {"reduction": "none"}),
           "l1": ("L1Loss", {}), "bce": ("BCEWithLogitsLoss", {"pos_weight": w})}[kind]
    name, kw = cls
    if kind in ("ce", "ce_sum", "ce_smooth_weight"):
        t[1] = 0
    if kind.startswith("nll"):
        x = x - np.log(np.exp(x).sum(1, keepdims=True))
    if kind in ("mse", "mse_none", "l1", "bce"):
        t = RNG.random((6, 5))
    tdt = getattr(torch, dtype)
    tkw = {k: torch.tensor(v, dtype=tdt) if isinstance(v, np.ndarray) else v
           for k, v in kw.items()}
    jkw = {k: tj.tensor(v, dtype=getattr(tj, dtype)) if isinstance(v, np.ndarray) else v
           for k, v in kw.items()}
    tm, m = getattr(torch.nn, name)(**tkw), getattr(nn, name)(**jkw)
    assert repr(m) == repr(tm)
    tx = torch.tensor(x, dtype=tdt, requires_grad=True)
    jx = tj.tensor(x, dtype=getattr(tj, dtype), requires_grad=True)
    tt = torch.tensor(t, dtype=tdt) if t.dtype.kind == "f" else torch.tensor(t)
    jt = tj.tensor(t, dtype=getattr(tj, dtype)) if t.dtype.kind == "f" else tj.tensor(t)
    tl, jl = tm(tx, tt), m(jx, jt)
    rtol, atol = TOL[dtype]
    assert_close(jl, tl.detach().numpy(), rtol, atol)
    tl.sum().backward()
    jl.sum().backward()
    assert_close(jx.grad, tx.grad.numpy(), rtol, atol)


def test_loss_weight_is_a_buffer():
    ce = nn.CrossEntropyLoss(weight=tj.ones(3))
    assert [n for n, _ in ce.named_buffers()] == ["weight"]
    ce.double()
    assert ce.weight.dtype is tj.float64
