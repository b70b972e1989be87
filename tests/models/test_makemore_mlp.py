"""makemore's character-level MLP (Bengio et al. 2003 as Karpathy writes it): an embedding
table C indexed by the integer context, tanh hidden layer, cross-entropy over integer targets."""
import numpy as np
import pytest

from models.harness import (MODES, Model, check_against_torch, check_finite_differences,
                            check_sgd_trajectory, torch)

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
WORDS = ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia"]
BLOCK, N_EMBD, N_HIDDEN, VOCAB = 3, 10, 64, 27


def build_dataset(words):
    """makemore's build_dataset: every 3-character context and the character that follows."""
    stoi = {s: i + 1 for i, s in enumerate("abcdefghijklmnopqrstuvwxyz")}
    stoi["."] = 0
    X, Y = [], []
    for w in words:
        context = [0] * BLOCK
        for ch in w + ".":
            ix = stoi[ch]
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    return np.array(X, np.int64), np.array(Y, np.int64)


def params(rng):
    fan_in = N_EMBD * BLOCK
    return {
        "C": rng.standard_normal((VOCAB, N_EMBD)),
        "W1": rng.standard_normal((fan_in, N_HIDDEN)) * (5 / 3) / fan_in ** 0.5,
        "b1": rng.standard_normal(N_HIDDEN) * 0.01,
        "W2": rng.standard_normal((N_HIDDEN, VOCAB)) * 0.1,
        "b2": rng.standard_normal(VOCAB) * 0.01,
    }


def data(rng):
    X, Y = build_dataset(WORDS)
    return {"X": X, "Y": Y}


def loss(lib, F, p, d):
    emb = p["C"][d["X"]]                                  # (N, 3, 10)
    h = lib.tanh(emb.view(-1, N_EMBD * BLOCK) @ p["W1"] + p["b1"])
    logits = h @ p["W2"] + p["b2"]
    return F.cross_entropy(logits, d["Y"])


MODEL = Model("makemore_mlp", params, data, loss)


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
