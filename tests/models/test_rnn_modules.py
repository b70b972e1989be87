"""tj.nn.RNN / LSTM / GRU and their cells against torch.nn's: the same parameter names, shapes,
reprs and state_dicts; from the same weights, the same outputs, final states and gradients
(input, initial state, every parameter) for batch_first, num_layers, bidirectional, proj_size,
bias=False, unbatched input, eagerly and under tj.compile; dropout between layers applies the
mask F.dropout draws; and a char-level language model (Embedding, 2-layer LSTM or GRU, Linear)
trains three AdamW steps as torch's does, eagerly and as one compiled step."""
import numpy as np
import pytest

import tracejit as tj
from models.harness import training_step

torch = pytest.importorskip("torch")

IN, HID = 3, 5
CONFIGS = [
    ("LSTM", dict(num_layers=2, batch_first=True)),
    ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=2)),
    ("GRU", dict(num_layers=2, batch_first=True, bidirectional=True)),
    ("GRU", dict(bias=False)),
    ("RNN", dict(num_layers=2, nonlinearity="relu")),
    ("RNN", dict(bidirectional=True, batch_first=True)),
]


def _sd(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _pair(cls: str, dtype: str = "float64", **kw):
    """The torch module and a tracejit one loaded from its state_dict."""
    tmodel = getattr(torch.nn, cls)(IN, HID, dtype=getattr(torch, dtype), **kw)
    model = getattr(tj.nn, cls)(IN, HID, dtype=getattr(tj, dtype), **kw)
    model.load_state_dict(_sd(tmodel))
    return tmodel, model


def _flat(cls: str, result) -> list:
    out, state = result
    return [out, *state] if cls == "LSTM" else [out, state]


def _weighted_sum(lib, outs, weights):
    return sum((o * lib.tensor(w)).sum() for o, w in zip(outs, weights))


def _forward_and_grads(lib, cls, model, x, hs, weights):
    """Outputs, and gradients of a random weighting of them, w.r.t. x, the states, parameters."""
    x = lib.tensor(x, requires_grad=True)
    hs = [lib.tensor(h, requires_grad=True) for h in hs]
    hx = None if not hs else (tuple(hs) if cls == "LSTM" else hs[0])
    outs = _flat(cls, model(x, hx))
    _weighted_sum(lib, outs, weights).backward()
    grads = [x.grad] + [h.grad for h in hs] + [p.grad for _, p in model.named_parameters()]
    return [o.detach().numpy() for o in outs], [g.numpy() for g in grads]


@pytest.mark.parametrize("with_state,compiled", [(False, False), (True, False), (True, True)],
                         ids=["zero_state", "given_state", "given_state_compiled"])
@pytest.mark.parametrize("cls,kw", CONFIGS, ids=[f"{c}-{'-'.join(k)}" for c, k in CONFIGS])
def test_layer_matches_torch(cls, kw, with_state, compiled):
    tmodel, model = _pair(cls, **kw)
    assert repr(model) == repr(tmodel)
    assert ([(k, tuple(p.shape)) for k, p in model.named_parameters()]
            == [(k, tuple(p.shape)) for k, p in tmodel.named_parameters()])
    rng = np.random.default_rng(0)
    batch, seq = 3, 4
    x = rng.standard_normal((batch, seq, IN) if kw.get("batch_first") else (seq, batch, IN))
    layers = kw.get("num_layers", 1) * (2 if kw.get("bidirectional") else 1)
    hs = []
    if with_state:
        hs = [rng.standard_normal((layers, batch, kw.get("proj_size") or HID))]
        if cls == "LSTM":
            hs.append(rng.standard_normal((layers, batch, HID)))
    with torch.no_grad():
        shapes = [tuple(o.shape) for o in _flat(cls, tmodel(torch.tensor(x)))]
    weights = [rng.standard_normal(s) for s in shapes]
    want, want_grads = _forward_and_grads(torch, cls, tmodel, x, hs, weights)
    got, got_grads = _forward_and_grads(tj, cls, tj.compile(model) if compiled else model,
                                        x, hs, weights)
    for g, w in zip(got + got_grads, want + want_grads):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_float32_and_unbatched_input(cls):
    tmodel, model = _pair(cls, "float32", num_layers=2)
    x = np.random.default_rng(1).standard_normal((7, IN)).astype(np.float32)   # (L, H_in)
    with torch.no_grad():
        want = _flat(cls, tmodel(torch.tensor(x)))
    got = _flat(cls, model(tj.tensor(x)))
    for g, w in zip(got, want):
        assert tuple(g.shape) == tuple(w.shape) and g.dtype == tj.float32
        np.testing.assert_allclose(g.detach().numpy(), w.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cells_match_torch(cls):
    tcell, cell = _pair(cls, bias=cls != "GRUCell")
    assert repr(cell) == repr(tcell)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, IN))
    n_states = 2 if cls == "LSTMCell" else 1
    hs = [rng.standard_normal((4, HID)) for _ in range(n_states)]
    results = []
    for lib, c in ((torch, tcell), (tj, cell)):
        xt = lib.tensor(x, requires_grad=True)
        ht = [lib.tensor(h, requires_grad=True) for h in hs]
        out = c(xt, tuple(ht) if n_states == 2 else ht[0])
        outs = list(out) if n_states == 2 else [out]
        _weighted_sum(lib, outs, [np.full((4, HID), i + 1.5) for i in range(n_states)]).backward()
        unbatched = c(lib.tensor(x[0]))          # no state given: zeros; one sample: no batch
        results.append([o.detach().numpy() for o in outs]
                       + [xt.grad.numpy()] + [h.grad.numpy() for h in ht]
                       + [p.grad.numpy() for p in c.parameters()]
                       + [u.detach().numpy() for u in (unbatched if n_states == 2
                                                       else [unbatched])])
    for g, w in zip(results[1], results[0]):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


def test_dropout_between_layers_is_f_dropout_of_each_layers_output():
    """A 3-layer LSTM with dropout in training mode equals three one-layer torch LSTMs with
    tracejit's dropout masks (drawn again from the same seed) between them; eval mode and the
    last layer's output are untouched."""
    tmodel, model = _pair("LSTM", num_layers=3, dropout=0.4)
    x = np.random.default_rng(3).standard_normal((5, 2, IN))
    tj.manual_seed(7)
    with tj.no_grad():
        got, (h_n, c_n) = model(tj.tensor(x))
    tj.manual_seed(7)
    masks = [tj.nn.functional.dropout(tj.ones(5, 2, HID, dtype=tj.float64), 0.4).numpy()
             for _ in range(2)]
    assert 0 < (masks[0] == 0).mean() < 1 and not np.array_equal(masks[0], masks[1])
    sd = _sd(tmodel)
    layer_in, hs, cs = torch.tensor(x), [], []
    for layer in range(3):
        one = torch.nn.LSTM(layer_in.shape[-1], HID, dtype=torch.float64)
        one.load_state_dict({k.replace(f"_l{layer}", "_l0"): torch.tensor(v)
                             for k, v in sd.items() if k.endswith(f"_l{layer}")})
        with torch.no_grad():
            layer_in, (h, c) = one(layer_in)
        hs.append(h[0])
        cs.append(c[0])
        if layer < 2:
            layer_in = layer_in * torch.tensor(masks[layer])
    np.testing.assert_allclose(got.numpy(), layer_in.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_n.numpy(), torch.stack(hs).numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c_n.numpy(), torch.stack(cs).numpy(), rtol=1e-10, atol=1e-12)
    model.eval()
    tmodel.eval()
    with torch.no_grad():
        want = tmodel(torch.tensor(x))[0].numpy()
    got = model(tj.tensor(x))[0].detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_initialisation_is_uniform_within_one_over_sqrt_hidden():
    tj.manual_seed(0)
    model = tj.nn.GRU(IN, 16, num_layers=2)
    bound = 1 / 4
    for name, p in model.named_parameters():
        v = p.detach().numpy()
        assert v.dtype == np.float32
        assert np.all(np.abs(v) <= bound), name
        assert v.std() > bound / 3, name          # spread over the interval, not constant
    assert len(model.all_weights) == 2 and len(model.all_weights[0]) == 4


def test_bad_arguments_raise_clear_errors():
    lstm = tj.nn.LSTM(IN, HID, num_layers=2, batch_first=True)
    with pytest.raises(RuntimeError, match=r"LSTM: input.size\(-1\) must be equal to input_size"
                       r".*test_rnn_modules.py"):
        lstm(tj.zeros(2, 4, IN + 1))
    with pytest.raises(ValueError, match="LSTM: expected input to be 2D or 3D, got 4D"):
        lstm(tj.zeros(2, 4, 1, IN))
    with pytest.raises(RuntimeError, match=r"expected hidden\[0\] of size \[2, 2, 5\], got "
                       r"f32\[2, 3, 5\]"):
        lstm(tj.zeros(2, 4, IN), (tj.zeros(2, 3, HID), tj.zeros(2, 2, HID)))
    with pytest.raises(RuntimeError, match="hidden state"):
        lstm(tj.zeros(2, 4, IN), (tj.zeros(2, HID), tj.zeros(2, HID)))
    with pytest.raises(RuntimeError, match="sequence length"):
        lstm(tj.zeros(2, 0, IN))
    with pytest.raises(RuntimeError,
                       match=r"GRUCell: input.size\(-1\) must be equal to input_size"):
        tj.nn.GRUCell(IN, HID)(tj.zeros(2, IN + 2))
    with pytest.raises(ValueError, match="dropout should be a number in range"):
        tj.nn.LSTM(IN, HID, dropout=1.5)
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        tj.nn.GRU(IN, HID, dropout=0.2)
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
        tj.nn.GRU(IN, HID, proj_size=2)
    out, h = tj.nn.GRU(IN, HID)(tj.zeros(3, 0, IN))     # an empty batch is fine, as torch's
    assert tuple(out.shape) == (3, 0, HID) and tuple(h.shape) == (1, 0, HID)


# -- a char-level language model, as one would write it ------------------------------------------
def make_char_model(lib, cell: str, vocab: int = 11, emb: int = 6, hidden: int = 8):
    nn = lib.nn

    class CharRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, emb)
            self.rnn = getattr(nn, cell)(emb, hidden, num_layers=2, batch_first=True)
            self.head = nn.Linear(hidden, vocab)

        def forward(self, idx, state=None):
            out, state = self.rnn(self.embed(idx), state)
            return self.head(out), state

    return CharRNN()


def _train_char(lib, model, cell, xs, ys, compiled):
    def loss_of(model, x, y):
        logits, _ = model(x)
        return lib.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                               y.reshape(-1))
    opt = lib.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    step = training_step(lib, model, opt, loss_of, compiled)
    losses = [step(lib.tensor(x), lib.tensor(y)).item() for x, y in zip(xs, ys)]
    model.eval()
    with lib.no_grad():                     # sampling-style use: one token, carried state
        logits, state = model(lib.tensor(xs[0][:, :1]))
        logits, _ = model(lib.tensor(xs[0][:, 1:2]), state)
    return losses, _sd(model), logits.numpy()


@pytest.mark.parametrize("cell,dtype,compiled", [
    ("LSTM", "float64", False), ("LSTM", "float64", True), ("GRU", "float64", False),
    ("GRU", "float64", True), ("LSTM", "float32", False), ("GRU", "float32", True)])
def test_char_model_trains_with_adamw_as_torch(cell, dtype, compiled):
    rng = np.random.default_rng(4)
    text = rng.integers(0, 11, (3, 6))            # one batch, three steps: the loss must fall
    xs, ys = [text[:, :-1]] * 3, [text[:, 1:]] * 3
    torch.manual_seed(0)
    tmodel = make_char_model(torch, cell).to(getattr(torch, dtype))
    model = make_char_model(tj, cell).to(getattr(tj, dtype))
    model.load_state_dict(_sd(tmodel))
    want = _train_char(torch, tmodel, cell, xs, ys, False)
    got = _train_char(tj, model, cell, xs, ys, compiled)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(got[0], want[0], **tol)
    assert want[0][-1] < want[0][0]
    for k in want[1]:
        np.testing.assert_allclose(got[1][k], want[1][k], err_msg=k, **tol)
    np.testing.assert_allclose(got[2], want[2], **tol)
