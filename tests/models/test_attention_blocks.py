"""Two transformer blocks as nanoGPT writes them: pre-layer-norm causal self-attention with a
masked softmax over a lower-triangular mask, then a GELU MLP, each with a residual; a final
layer norm, a language-model head and cross-entropy over the next token."""
import math

import numpy as np
import pytest

from models.harness import (MODES, Model, check_against_torch, check_finite_differences,
                            check_sgd_trajectory, torch)

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
N_LAYER, N_HEAD, N_EMBD, BLOCK, BATCH, VOCAB = 2, 2, 16, 8, 2, 11


def params(rng):
    std = 0.02 * 10                  # GPT-2's init scaled up so that the test is not all noise
    p = {"wte": rng.standard_normal((VOCAB, N_EMBD)) * std,
         "wpe": rng.standard_normal((BLOCK, N_EMBD)) * std,
         "ln_f.weight": 1 + 0.1 * rng.standard_normal(N_EMBD),
         "ln_f.bias": 0.1 * rng.standard_normal(N_EMBD),
         "lm_head": rng.standard_normal((N_EMBD, VOCAB)) * std}
    for i in range(N_LAYER):
        for ln in ("ln_1", "ln_2"):
            p[f"h{i}.{ln}.weight"] = 1 + 0.1 * rng.standard_normal(N_EMBD)
            p[f"h{i}.{ln}.bias"] = 0.1 * rng.standard_normal(N_EMBD)
        for name, shape in (("c_attn", (N_EMBD, 3 * N_EMBD)), ("attn.c_proj", (N_EMBD, N_EMBD)),
                            ("c_fc", (N_EMBD, 4 * N_EMBD)), ("mlp.c_proj", (4 * N_EMBD, N_EMBD))):
            p[f"h{i}.{name}.weight"] = rng.standard_normal(shape) * std
            p[f"h{i}.{name}.bias"] = rng.standard_normal(shape[1]) * 0.01
    return p


def data(rng):
    idx = rng.integers(0, VOCAB, (BATCH, BLOCK + 1))
    return {"idx": idx[:, :-1], "targets": idx[:, 1:], "pos": np.arange(BLOCK),
            "bias": np.tril(np.ones((BLOCK, BLOCK), bool))}    # nanoGPT's causal mask buffer


def causal_self_attention(lib, F, x, p, pre, mask):
    B, T, C = x.shape
    hs = C // N_HEAD
    qkv = x @ p[f"{pre}.c_attn.weight"] + p[f"{pre}.c_attn.bias"]
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    k = k.view(B, T, N_HEAD, hs).transpose(1, 2)       # (B, nh, T, hs)
    q = q.view(B, T, N_HEAD, hs).transpose(1, 2)
    v = v.view(B, T, N_HEAD, hs).transpose(1, 2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.shape[-1]))
    att = lib.where(mask[:T, :T], att, float("-inf"))
    att = F.softmax(att, dim=-1)
    y = att @ v                                         # (B, nh, T, hs)
    y = y.transpose(1, 2).reshape(B, T, C)
    return y @ p[f"{pre}.attn.c_proj.weight"] + p[f"{pre}.attn.c_proj.bias"]


def mlp(F, x, p, pre):
    x = x @ p[f"{pre}.c_fc.weight"] + p[f"{pre}.c_fc.bias"]
    x = F.gelu(x, approximate="tanh")
    return x @ p[f"{pre}.mlp.c_proj.weight"] + p[f"{pre}.mlp.c_proj.bias"]


def layer_norm(F, x, p, name):
    return F.layer_norm(x, (N_EMBD,), p[f"{name}.weight"], p[f"{name}.bias"], 1e-5)


def loss(lib, F, p, d):
    x = p["wte"][d["idx"]] + p["wpe"][d["pos"]]
    for i in range(N_LAYER):
        x = x + causal_self_attention(lib, F, layer_norm(F, x, p, f"h{i}.ln_1"), p, f"h{i}",
                                      d["bias"])
        x = x + mlp(F, layer_norm(F, x, p, f"h{i}.ln_2"), p, f"h{i}")
    logits = layer_norm(F, x, p, "ln_f") @ p["lm_head"]
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), d["targets"].reshape(-1))


MODEL = Model("attention", params, data, loss)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
def test_loss_and_grads_match_torch(mode, dtype):
    check_against_torch(MODEL, mode, dtype)


@pytest.mark.parametrize("mode", MODES)
def test_grads_match_finite_differences(mode):
    check_finite_differences(MODEL, mode, coords_per_param=2)


@needs_torch
@pytest.mark.parametrize("how", ["eager", "compiled"])
def test_sgd_trajectory_matches_torch(how):
    check_sgd_trajectory(MODEL, how, steps=5)
