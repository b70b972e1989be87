"""nn.MultiheadAttention, computed as torch.nn.functional.multi_head_attention_forward does."""
from __future__ import annotations

import math
from typing import Any

from ..ir import dtypes as dt
from ..tracer import composites as C
from ..tracer import ops
from ..tracer.rng import dropout as _dropout
from ..tracer.tensor import Tensor
from . import functional as F
from . import init
from .linear import Linear, new_parameter
from .module import Module


class NonDynamicallyQuantizableLinear(Linear):
    """torch's name for MultiheadAttention.out_proj (a plain Linear)."""


def _float_mask(mask: Tensor | None, name: str, like: Tensor) -> Tensor | None:
    """A bool mask (True = may not attend) as 0 / -inf of like's dtype; a float mask as is."""
    if mask is None:
        return None
    m = ops.as_tensor(mask)
    if m.dtype is dt.bool_:
        return ops.where(m, float("-inf"), ops.as_tensor(0.0, like.dtype, like=like))
    if not m.dtype.is_float:
        raise ops._err("MultiheadAttention", f"only bool and floating types of {name} are "
                       f"supported, got {ops._fmt(m)}", TypeError)
    return m


class MultiheadAttention(Module):
    """Attention over num_heads heads of embed_dim // num_heads features each. Inputs are
    (L, N, E), or (N, L, E) with batch_first=True, or unbatched (L, E). key_padding_mask [N, S]
    and attn_mask [L, S] or [N * num_heads, L, S]: True (bool) means "may not attend"; float
    masks are added to the scores. Returns (output, weights averaged over heads or None)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got "
                             f"embed_dim={embed_dim} and num_heads={num_heads} instead")
        if embed_dim % num_heads:
            raise AssertionError("embed_dim must be divisible by num_heads")
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError("nn.MultiheadAttention: add_bias_kv and add_zero_attn "
                                      "are not supported")
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        if self._qkv_same_embed_dim:
            self.in_proj_weight = new_parameter((3 * embed_dim, embed_dim), device, dtype)
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = new_parameter((embed_dim, embed_dim), device, dtype)
            self.k_proj_weight = new_parameter((embed_dim, self.kdim), device, dtype)
            self.v_proj_weight = new_parameter((embed_dim, self.vdim), device, dtype)
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = new_parameter((3 * embed_dim,), device, dtype)
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias,
                                                        device=device, dtype=dtype)
        self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)

    def _projections(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        E = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:E], b[E:2 * E], b[2 * E:])
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            wq, wk, wv = w[:E], w[E:2 * E], w[2 * E:]
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return F.linear(q, wq, bq), F.linear(k, wk, bk), F.linear(v, wv, bv)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint")
        unbatched = query.ndim == 2
        if unbatched:
            query, key, value = (ops.unsqueeze(t, 1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = ops.unsqueeze(ops.as_tensor(key_padding_mask), 0)
        elif self.batch_first:
            query, key, value = (ops.swapaxes(t, 0, 1) for t in (query, key, value))
        L, N, E = query.shape
        S = key.shape[0]
        if E != self.embed_dim:
            raise ops._err("MultiheadAttention", f"was expecting embedding dimension of "
                           f"{self.embed_dim}, but got {E}")
        H, D = self.num_heads, self.head_dim
        q, k, v = self._projections(query, key, value)

        def heads(t: Tensor, n: int) -> Tensor:          # (n, N, E) -> (N, H, n, D)
            return ops.permute(ops.reshape(t, (n, N, H, D)), (1, 2, 0, 3))
        q, k, v = heads(q, L), heads(k, S), heads(v, S)
        mask = _float_mask(attn_mask, "attn_mask", q)
        if mask is not None:
            if mask.ndim == 3:                            # [N * H, L, S]
                mask = ops.reshape(mask, (N, H, L, S))
            elif mask.shape != (L, S):
                raise ops._err("MultiheadAttention", f"attn_mask {ops._fmt(mask)} should have "
                               f"shape {[L, S]} or {[N * H, L, S]}")
        kpm = _float_mask(key_padding_mask, "key_padding_mask", q)
        if kpm is not None:
            if kpm.shape != (N, S):
                raise ops._err("MultiheadAttention", f"key_padding_mask {ops._fmt(kpm)} "
                               f"should have shape {[N, S]}")
            kpm = ops.reshape(kpm, (N, 1, 1, S))
            mask = kpm if mask is None else ops.add(mask, kpm)
        p = self.dropout if self.training else 0.0
        if need_weights:
            scores = ops.matmul(ops.mul(q, math.sqrt(1.0 / D)), ops.swapaxes(k, -2, -1))
            if mask is not None:
                scores = ops.add(scores, mask)
            weights = C.softmax(scores, -1)
            if p > 0.0:
                weights = _dropout(weights, p, True)
            out = ops.matmul(weights, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, mask, p)
            weights = None
        out = ops.reshape(ops.permute(out, (2, 0, 1, 3)), (L, N, E))   # (L, N, E)
        out = self.out_proj(out)
        if weights is not None and average_attn_weights:
            weights = C.mean(weights, 1)
        if unbatched:
            out = ops.squeeze(out, 1)
            if weights is not None:
                weights = ops.squeeze(weights, 0)
        elif self.batch_first:
            out = ops.swapaxes(out, 0, 1)
        return out, weights
