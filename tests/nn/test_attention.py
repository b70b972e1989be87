"""nn.MultiheadAttention against torch.nn.MultiheadAttention (float32/float64, forward and
backward, masks, batch_first, kdim/vdim, unbatched, need_weights)."""
import numpy as np
import pytest
import torch

import tracejit as tj
from tracejit import nn
from conftest import assert_close

TOL = {"float32": (3e-5, 3e-6), "float64": (1e-11, 1e-12)}

CONFIGS = {
    "self": ({}, {}),
    "batch_first": ({"batch_first": True}, {}),
    "no_bias_kdim_vdim": ({"bias": False, "kdim": 4, "vdim": 6}, {}),
    "key_padding_bool": ({}, {"key_padding_mask": "bool"}),
    "attn_mask_bool": ({}, {"attn_mask": "bool2d"}),
    "attn_mask_float_3d": ({}, {"attn_mask": "float3d"}),
    "both_masks_per_head": ({"batch_first": True}, {"key_padding_mask": "bool",
                                                    "attn_mask": "bool2d",
                                                    "average_attn_weights": False}),
    "no_weights": ({}, {"need_weights": False, "key_padding_mask": "bool"}),
    "causal_hint": ({}, {"attn_mask": "causal", "is_causal": True}),
    "unbatched": ({}, {"unbatched": True}),
}


def _masks(kind: str, rng, L, S, N, H):
    if kind == "bool":
        m = rng.random((N, S)) < 0.3
        m[:, 0] = False
        return m
    if kind == "bool2d":
        m = rng.random((L, S)) < 0.4
        m[:, 0] = False
        return m
    if kind == "float":
        return rng.standard_normal((L, S))
    if kind == "float3d":
        return rng.standard_normal((N * H, L, S))
    if kind == "causal":
        return np.triu(np.ones((L, S), bool), 1)
    raise AssertionError(kind)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_multihead_attention_matches_torch(name, dtype):
    kw, call = CONFIGS[name]
    call = dict(call)
    rng = np.random.default_rng(5)
    E, H, L, S, N = 8, 2, 5, 5, 3
    tm = torch.nn.MultiheadAttention(E, H, **kw).to(getattr(torch, dtype))
    m = nn.MultiheadAttention(E, H, **kw).to(getattr(tj, dtype))
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in tm.named_parameters()]
    assert repr(m) == repr(tm)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    unbatched = call.pop("unbatched", False)
    kd, vd = kw.get("kdim", E), kw.get("vdim", E)
    shape = (lambda n, d: (n, d)) if unbatched else \
        (lambda n, d: (N, n, d) if kw.get("batch_first") else (n, N, d))
    arrays = [rng.standard_normal(shape(L, E)), rng.standard_normal(shape(S, kd)),
              rng.standard_normal(shape(S, vd))]
    if name in ("self", "batch_first", "unbatched"):
        arrays = [arrays[0]] * 3                      # self-attention: the same tensor
    for k in ("key_padding_mask", "attn_mask"):
        if k in call:
            call[k] = _masks(call[k], rng, L, S, N, H)
    tdt, jdt = getattr(torch, dtype), getattr(tj, dtype)
    tx = [torch.tensor(a, dtype=tdt, requires_grad=True) for a in arrays]
    jx = [tj.tensor(a, dtype=jdt, requires_grad=True) for a in arrays]
    tcall = {k: torch.tensor(v, dtype=tdt if v.dtype.kind == "f" else None)
             if isinstance(v, np.ndarray) else v for k, v in call.items()}
    jcall = {k: tj.tensor(v, dtype=jdt if v.dtype.kind == "f" else None)
             if isinstance(v, np.ndarray) else v for k, v in call.items()}
    tout, tw = tm(*tx, **tcall)
    out, w = m(*jx, **jcall)
    rtol, atol = TOL[dtype]
    assert_close(out, tout.detach().numpy(), rtol, atol)
    if tw is None:
        assert w is None
    else:
        assert_close(w, tw.detach().numpy(), rtol, atol)
    g = rng.standard_normal(tuple(tout.shape))
    loss_t = (tout * torch.tensor(g, dtype=tdt)).sum() + (0 if tw is None else tw.sum())
    loss_j = (out * tj.tensor(g, dtype=jdt)).sum() + (0 if w is None else w.sum())
    loss_t.backward()
    loss_j.backward()
    for a, ta in zip(jx, tx):
        assert_close(a.grad, ta.grad.numpy(), rtol, atol)
    for (n, p), (_, tp) in zip(m.named_parameters(), tm.named_parameters()):
        assert_close(p.grad, tp.grad.numpy(), rtol, atol)


def test_multihead_attention_init_compile_and_errors():
    m = nn.MultiheadAttention(16, 4, dropout=0.1)
    assert (m.in_proj_bias.detach().numpy() == 0).all()
    bound = np.sqrt(6 / (16 + 48))
    assert np.abs(m.in_proj_weight.detach().numpy()).max() <= bound
    m.eval()
    x = tj.randn(5, 2, 16)
    out, w = m(x, x, x)
    cout, cw = tj.compile(lambda x: m(x, x, x))(x)
    assert_close(cout, out, 1e-5, 1e-6)
    assert_close(cw, w, 1e-5, 1e-6)
    with pytest.raises(AssertionError, match="divisible"):
        nn.MultiheadAttention(10, 3)
    with pytest.raises(RuntimeError, match="Need attn_mask"):
        m(x, x, x, is_causal=True)
    with pytest.raises(ValueError, match="embedding dimension of 16, but got 8"):
        m(tj.randn(5, 2, 8), x, x)


@pytest.mark.parametrize("variant", ["post_norm", "pre_norm_gelu_batch_first", "masks"])
def test_transformer_encoder_matches_torch(variant):
    kw = {"dim_feedforward": 16}
    call = {}
    rng = np.random.default_rng(9)
    L, N, E = 6, 3, 8
    if variant == "pre_norm_gelu_batch_first":
        kw.update(norm_first=True, activation="gelu", batch_first=True)
    tl = torch.nn.TransformerEncoderLayer(E, 2, **kw)
    jl = nn.TransformerEncoderLayer(E, 2, **kw)
    tm = torch.nn.TransformerEncoder(tl, 2, norm=torch.nn.LayerNorm(E),
                                     enable_nested_tensor=False).double().eval()
    m = nn.TransformerEncoder(jl, 2, norm=nn.LayerNorm(E)).double().eval()
    assert repr(m) == repr(tm)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    x = rng.standard_normal((N, L, E) if kw.get("batch_first") else (L, N, E))
    if variant == "masks":
        causal = np.triu(np.ones((L, L), bool), 1)
        pad = np.zeros((N, L), bool)
        pad[1, -2:] = True
        call = {"mask": causal, "src_key_padding_mask": pad}
    tx = torch.tensor(x, requires_grad=True)
    jx = tj.tensor(x, requires_grad=True)
    tout = tm(tx, **{k: torch.tensor(v) for k, v in call.items()})
    out = m(jx, **{k: tj.tensor(v) for k, v in call.items()})
    assert_close(out, tout.detach().numpy(), 1e-10, 1e-11)
    g = rng.standard_normal(tuple(tout.shape))
    (tout * torch.tensor(g)).sum().backward()
    (out * tj.tensor(g)).sum().backward()
    assert_close(jx.grad, tx.grad.numpy(), 1e-9, 1e-11)
    for (n, p), (_, tp) in zip(m.named_parameters(), tm.named_parameters()):
        assert_close(p.grad, tp.grad.numpy(), 1e-9, 1e-11)
