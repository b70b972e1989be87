"""An LSTM cell (torch.nn.LSTMCell's equations and parameter names) unrolled over 8 steps,
with a linear read-out of every hidden state and a mean squared error against targets."""
import numpy as np
import pytest

from models.harness import (MODES, Model, check_against_torch, check_finite_differences,
                            check_sgd_trajectory, instance, torch)

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
STEPS, BATCH, N_IN, N_HIDDEN, N_OUT = 8, 4, 5, 8, 3


def params(rng):
    k = 1 / N_HIDDEN ** 0.5                   # LSTMCell's U(-k, k) initialisation
    return {
        "weight_ih": rng.uniform(-k, k, (4 * N_HIDDEN, N_IN)),
        "weight_hh": rng.uniform(-k, k, (4 * N_HIDDEN, N_HIDDEN)),
        "bias_ih": rng.uniform(-k, k, 4 * N_HIDDEN),
        "bias_hh": rng.uniform(-k, k, 4 * N_HIDDEN),
        "W_out": rng.standard_normal((N_HIDDEN, N_OUT)) * 0.5,
    }


def data(rng):
    return {"x": rng.standard_normal((STEPS, BATCH, N_IN)),
            "y": rng.standard_normal((STEPS, BATCH, N_OUT)),
            "h0": np.zeros((BATCH, N_HIDDEN)), "c0": np.zeros((BATCH, N_HIDDEN))}


def lstm_cell(lib, x, h, c, p):
    gates = x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
    H = N_HIDDEN
    i, f, g, o = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:]
    i, f, g, o = lib.sigmoid(i), lib.sigmoid(f), lib.tanh(g), lib.sigmoid(o)
    c = f * c + i * g
    h = o * lib.tanh(c)
    return h, c


def loss(lib, F, p, d):
    h, c = d["h0"], d["c0"]
    total = 0.0
    for t in range(STEPS):
        h, c = lstm_cell(lib, d["x"][t], h, c, p)
        total = total + F.mse_loss(h @ p["W_out"], d["y"][t])
    return total / STEPS


MODEL = Model("lstm", params, data, loss)


@needs_torch
def test_cell_is_torchs_lstm_cell():
    """The hand-written cell is torch.nn.LSTMCell (so the model is the real thing)."""
    p, d = instance(MODEL, np.float64)
    cell = torch.nn.LSTMCell(N_IN, N_HIDDEN, dtype=torch.float64)
    with torch.no_grad():
        for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, k).copy_(torch.tensor(p[k]))
        want = cell(torch.tensor(d["x"][0]), (torch.tensor(d["h0"]), torch.tensor(d["c0"])))
    got = lstm_cell(torch, torch.tensor(d["x"][0]), torch.tensor(d["h0"]), torch.tensor(d["c0"]),
                    {k: torch.tensor(v) for k, v in p.items()})
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
def test_loss_and_grads_match_torch(mode, dtype):
    check_against_torch(MODEL, mode, dtype)


@pytest.mark.parametrize("mode", MODES)
def test_grads_match_finite_differences(mode):
    check_finite_differences(MODEL, mode)


@needs_torch
@pytest.mark.parametrize("how", ["eager", "compiled"])
def test_sgd_trajectory_matches_torch(how):
    check_sgd_trajectory(MODEL, how, steps=6)
