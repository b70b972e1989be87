"""A LLaMA-style decoder as PyTorch users write it (the shape of Meta's llama reference and of
llama2.c's model.py), once against `lib` (tracejit or torch) and run on both from one
state_dict: a hand-written RMSNorm (x * rsqrt(mean(x^2) + eps) * weight, computed in float and
cast back with type_as) or nn.RMSNorm; rotary embeddings from precomputed cos/sin tables
(non-persistent buffers) applied to (re, im) pairs split by reshape(..., -1, 2).unbind(-1) and
re-joined by stack + flatten; grouped-query attention whose k/v heads are repeated with
`x[:, :, :, None, :].expand(...).reshape(...)` (llama2.c) or `repeat_interleave(dim=2)` (Meta),
then either F.scaled_dot_product_attention(is_causal=True) or a triu(-inf) mask buffer added to
the scores + softmax(scores.float()).type_as(q); a SwiGLU MLP w2(silu(w1 x) * w3 x); tied
embeddings (tok_embeddings.weight = output.weight); `self.apply(self._init_weights)` with
nn.init.normal_/zeros_ and the scaled init of wo/w3; F.cross_entropy(ignore_index=-1).

Checked against torch: eager logits, loss and the gradients of every parameter; AdamW steps
with nanoGPT's configure_optimizers groups (decay for p.dim() >= 2); the same with
`tj.compile(model)` and with the whole training step compiled; a greedy generation loop
whose KV cache grows by cat, eagerly; and Meta's decoding, whose preallocated caches (plain
attributes) are written in place at [start_pos, start_pos + seqlen), compiled with start_pos
static (a traced int cannot bound a slice in tracejit: one trace per position).

Not portable: Meta's complex-number rotary variant (torch.polar, view_as_complex,
view_as_real); tracejit has no complex dtype, so the real cos/sin form is used here."""
import inspect
import math
from dataclasses import dataclass

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

TOL = {"float32": dict(rtol=2e-4, atol=2e-6), "float64": dict(rtol=1e-9, atol=1e-12)}
# Adam divides each step by sqrt(v): a near-zero float32 gradient element moves its parameter
# by rounding noise of up to ~lr * 1e-3
PARAM_ATOL = {"float32": 1e-5, "float64": 1e-12}


@dataclass
class ModelArgs:
    dim: int = 32
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = 2
    vocab_size: int = 50
    hidden_dim: int | None = None
    multiple_of: int = 16
    norm_eps: float = 1e-5
    max_seq_len: int = 16
    max_batch_size: int = 4         # Meta's preallocated KV cache
    dropout: float = 0.0
    flash: bool = True              # F.scaled_dot_product_attention, else the mask buffer
    repeat: str = "expand"          # "expand" (llama2.c) or "interleave" (Meta)
    norm: str = "hand"              # "hand" (RMSNorm written out) or "nn" (nn.RMSNorm)
    # the reference's x.float() before norms, rotations and softmax; a float64 run leaves it
    # out, since it would round to float32 there, where the two libraries' sums differ an ulp
    upcast: bool = True


def make_llama(lib, args: ModelArgs):
    nn = lib.nn
    F = lib.nn.functional

    def up(x):
        return x.float() if args.upcast else x

    class RMSNorm(nn.Module):
        def __init__(self, dim: int, eps: float):
            super().__init__()
            self.eps = eps
            self.weight = nn.Parameter(lib.ones(dim))

        def _norm(self, x):
            return x * lib.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

        def forward(self, x):
            output = self._norm(up(x)).type_as(x)
            return output * self.weight

    def norm(dim):
        if args.norm == "nn":
            return nn.RMSNorm(dim, eps=args.norm_eps)
        return RMSNorm(dim, eps=args.norm_eps)

    def precompute_freqs_cis(dim: int, end: int, theta: float = 10000.0):
        freqs = 1.0 / (theta ** (lib.arange(0, dim, 2)[: (dim // 2)].float() / dim))
        t = lib.arange(end, device=freqs.device)
        freqs = lib.outer(t, freqs).float()
        return lib.cos(freqs), lib.sin(freqs)

    def reshape_for_broadcast(freqs_cis, x):
        ndim = x.ndim
        assert 0 <= 1 < ndim
        assert freqs_cis.shape == (x.shape[1], x.shape[-1])
        shape = [d if i == 1 or i == ndim - 1 else 1 for i, d in enumerate(x.shape)]
        return freqs_cis.view(shape)

    def apply_rotary_emb(xq, xk, freqs_cos, freqs_sin):
        # (re, im) pairs of the last axis, rotated by the position's angle
        xq_r, xq_i = up(xq).reshape(xq.shape[:-1] + (-1, 2)).unbind(-1)
        xk_r, xk_i = up(xk).reshape(xk.shape[:-1] + (-1, 2)).unbind(-1)
        freqs_cos = reshape_for_broadcast(freqs_cos, xq_r)
        freqs_sin = reshape_for_broadcast(freqs_sin, xq_r)
        xq_out_r = xq_r * freqs_cos - xq_i * freqs_sin
        xq_out_i = xq_r * freqs_sin + xq_i * freqs_cos
        xk_out_r = xk_r * freqs_cos - xk_i * freqs_sin
        xk_out_i = xk_r * freqs_sin + xk_i * freqs_cos
        xq_out = lib.stack([xq_out_r, xq_out_i], dim=-1).flatten(3)
        xk_out = lib.stack([xk_out_r, xk_out_i], dim=-1).flatten(3)
        return xq_out.type_as(xq), xk_out.type_as(xk)

    def repeat_kv(x, n_rep: int):
        """torch.repeat_interleave(x, dim=2, repeats=n_rep)"""
        bs, slen, n_kv_heads, head_dim = x.shape
        if n_rep == 1:
            return x
        if args.repeat == "interleave":
            return lib.repeat_interleave(x, dim=2, repeats=n_rep)
        return (x[:, :, :, None, :]
                .expand(bs, slen, n_kv_heads, n_rep, head_dim)
                .reshape(bs, slen, n_kv_heads * n_rep, head_dim))

    class Attention(nn.Module):
        def __init__(self, args: ModelArgs):
            super().__init__()
            self.n_kv_heads = args.n_heads if args.n_kv_heads is None else args.n_kv_heads
            assert args.n_heads % self.n_kv_heads == 0
            self.n_local_heads = args.n_heads
            self.n_local_kv_heads = self.n_kv_heads
            self.n_rep = self.n_local_heads // self.n_local_kv_heads
            self.head_dim = args.dim // args.n_heads
            self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=False)
            self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
            self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
            self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)
            self.attn_dropout = nn.Dropout(args.dropout)
            self.resid_dropout = nn.Dropout(args.dropout)
            self.dropout = args.dropout
            self.flash = args.flash and hasattr(F, "scaled_dot_product_attention")
            if not self.flash:
                mask = lib.full((1, 1, args.max_seq_len, args.max_seq_len), float("-inf"))
                mask = lib.triu(mask, diagonal=1)
                self.register_buffer("mask", mask)
            # Meta's KV cache: plain attributes (not buffers), written in place each step
            shape = (args.max_batch_size, args.max_seq_len, self.n_local_kv_heads, self.head_dim)
            self.cache_k = lib.zeros(shape)
            self.cache_v = lib.zeros(shape)

        def forward(self, x, freqs_cos, freqs_sin, kv_cache=None, start_pos=None, mask=None):
            bsz, seqlen, _ = x.shape
            xq, xk, xv = self.wq(x), self.wk(x), self.wv(x)
            xq = xq.view(bsz, seqlen, self.n_local_heads, self.head_dim)
            xk = xk.view(bsz, seqlen, self.n_local_kv_heads, self.head_dim)
            xv = xv.view(bsz, seqlen, self.n_local_kv_heads, self.head_dim)
            xq, xk = apply_rotary_emb(xq, xk, freqs_cos, freqs_sin)
            if kv_cache is not None:            # the cache grows by one step's keys/values
                past_k, past_v = kv_cache
                if past_k is not None:
                    xk = lib.cat([past_k, xk], dim=1)
                    xv = lib.cat([past_v, xv], dim=1)
                new_cache = (xk, xv)
            if start_pos is not None:           # Meta's: written into the preallocated cache
                self.cache_k = self.cache_k.to(xq)
                self.cache_v = self.cache_v.to(xq)
                self.cache_k[:bsz, start_pos: start_pos + seqlen] = xk
                self.cache_v[:bsz, start_pos: start_pos + seqlen] = xv
                xk = self.cache_k[:bsz, : start_pos + seqlen]
                xv = self.cache_v[:bsz, : start_pos + seqlen]
            keys = repeat_kv(xk, self.n_rep)
            values = repeat_kv(xv, self.n_rep)
            xq = xq.transpose(1, 2)
            keys = keys.transpose(1, 2)
            values = values.transpose(1, 2)
            # one new query attends to every cached key; Meta's path passes its own mask
            causal = seqlen > 1 and start_pos is None
            if self.flash:
                output = F.scaled_dot_product_attention(
                    xq, keys, values, attn_mask=mask,
                    dropout_p=self.dropout if self.training else 0.0, is_causal=causal)
            else:
                scores = lib.matmul(xq, keys.transpose(2, 3)) / math.sqrt(self.head_dim)
                if causal:
                    assert hasattr(self, "mask")
                    scores = scores + self.mask[:, :, :seqlen, :seqlen]
                if mask is not None:
                    scores = scores + mask      # (bs, n_local_heads, seqlen, cache_len + seqlen)
                scores = F.softmax(up(scores), dim=-1).type_as(xq)
                scores = self.attn_dropout(scores)
                output = lib.matmul(scores, values)
            output = output.transpose(1, 2).contiguous().view(bsz, seqlen, -1)
            output = self.resid_dropout(self.wo(output))
            return output if kv_cache is None else (output, new_cache)

    class FeedForward(nn.Module):
        def __init__(self, dim: int, hidden_dim: int | None, multiple_of: int, dropout: float):
            super().__init__()
            if hidden_dim is None:
                hidden_dim = 4 * dim
                hidden_dim = int(2 * hidden_dim / 3)
                hidden_dim = multiple_of * ((hidden_dim + multiple_of - 1) // multiple_of)
            self.w1 = nn.Linear(dim, hidden_dim, bias=False)
            self.w2 = nn.Linear(hidden_dim, dim, bias=False)
            self.w3 = nn.Linear(dim, hidden_dim, bias=False)
            self.dropout = nn.Dropout(dropout)

        def forward(self, x):
            return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))

    class TransformerBlock(nn.Module):
        def __init__(self, layer_id: int, args: ModelArgs):
            super().__init__()
            self.n_heads = args.n_heads
            self.dim = args.dim
            self.head_dim = args.dim // args.n_heads
            self.attention = Attention(args)
            self.feed_forward = FeedForward(args.dim, args.hidden_dim, args.multiple_of,
                                            args.dropout)
            self.layer_id = layer_id
            self.attention_norm = norm(args.dim)
            self.ffn_norm = norm(args.dim)

        def forward(self, x, freqs_cos, freqs_sin, kv_cache=None, start_pos=None, mask=None):
            attn = self.attention.forward(self.attention_norm(x), freqs_cos, freqs_sin,
                                          kv_cache, start_pos, mask)
            if kv_cache is not None:
                attn, kv_cache = attn
            h = x + attn
            out = h + self.feed_forward.forward(self.ffn_norm(h))
            return out if kv_cache is None else (out, kv_cache)

    class Transformer(nn.Module):
        last_loss: lib.Tensor | None

        def __init__(self, params: ModelArgs):
            super().__init__()
            self.params = params
            self.vocab_size = params.vocab_size
            self.n_layers = params.n_layers
            self.tok_embeddings = nn.Embedding(params.vocab_size, params.dim)
            self.dropout = nn.Dropout(params.dropout)
            self.layers = lib.nn.ModuleList()
            for layer_id in range(params.n_layers):
                self.layers.append(TransformerBlock(layer_id, params))
            self.norm = norm(params.dim)
            self.output = nn.Linear(params.dim, params.vocab_size, bias=False)
            # weight tying
            self.tok_embeddings.weight = self.output.weight
            freqs_cos, freqs_sin = precompute_freqs_cis(self.params.dim // self.params.n_heads,
                                                        self.params.max_seq_len)
            self.register_buffer("freqs_cos", freqs_cos, persistent=False)
            self.register_buffer("freqs_sin", freqs_sin, persistent=False)
            self.apply(self._init_weights)
            for pn, p in self.named_parameters():
                if pn.endswith("w3.weight") or pn.endswith("wo.weight"):
                    lib.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * params.n_layers))
            self.last_loss = None

        def _init_weights(self, module):
            if isinstance(module, nn.Linear):
                lib.nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    lib.nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                lib.nn.init.normal_(module.weight, mean=0.0, std=0.02)

        def forward(self, tokens, targets=None):
            _bsz, seqlen = tokens.shape
            h = self.tok_embeddings(tokens)
            h = self.dropout(h)
            freqs_cos = self.freqs_cos[:seqlen]
            freqs_sin = self.freqs_sin[:seqlen]
            for layer in self.layers:
                h = layer(h, freqs_cos, freqs_sin)
            h = self.norm(h)
            if targets is not None:
                logits = self.output(h)
                self.last_loss = F.cross_entropy(logits.view(-1, logits.size(-1)),
                                                 targets.view(-1), ignore_index=-1)
            else:
                # inference: only the last position's logits (a list index keeps the axis)
                logits = self.output(h[:, [-1], :])
                self.last_loss = None
            return logits

        def forward_cached(self, tokens, start_pos: int, caches):
            """Logits of the last position and the grown per-layer (k, v) caches."""
            _bsz, seqlen = tokens.shape
            h = self.tok_embeddings(tokens)
            freqs_cos = self.freqs_cos[start_pos:start_pos + seqlen]
            freqs_sin = self.freqs_sin[start_pos:start_pos + seqlen]
            new_caches = []
            for layer, cache in zip(self.layers, caches):
                h, cache = layer(h, freqs_cos, freqs_sin, cache)
                new_caches.append(cache)
            return self.output(self.norm(h)[:, -1, :]), new_caches

        def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
            param_dict = {pn: p for pn, p in self.named_parameters()}
            param_dict = {pn: p for pn, p in param_dict.items() if p.requires_grad}
            decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]
            nodecay_params = [p for n, p in param_dict.items() if p.dim() < 2]
            optim_groups = [
                {"params": decay_params, "weight_decay": weight_decay},
                {"params": nodecay_params, "weight_decay": 0.0},
            ]
            fused_available = "fused" in inspect.signature(lib.optim.AdamW).parameters
            use_fused = fused_available and device_type == "cuda"
            extra_args = dict(fused=True) if use_fused else dict()
            return lib.optim.AdamW(optim_groups, lr=learning_rate, betas=betas, **extra_args)

        @lib.inference_mode()
        def generate_greedy(self, idx, max_new_tokens):
            """Greedy decoding: the prompt once, then one token a step against the KV cache."""
            caches = [(None, None)] * self.n_layers
            logits, caches = self.forward_cached(idx, 0, caches)
            for _ in range(max_new_tokens):
                idx_next = lib.argmax(logits, dim=-1, keepdim=True)
                pos = idx.size(1)
                idx = lib.cat((idx, idx_next), dim=1)
                if idx.size(1) >= self.params.max_seq_len:
                    break
                logits, caches = self.forward_cached(idx_next, pos, caches)
            return idx

        @lib.inference_mode()
        def forward_meta(self, tokens, start_pos: int):
            """Meta's: the logits of `tokens` at positions start_pos..., against the cache."""
            _bsz, seqlen = tokens.shape
            h = self.tok_embeddings(tokens)
            freqs_cos = self.freqs_cos[start_pos: start_pos + seqlen]
            freqs_sin = self.freqs_sin[start_pos: start_pos + seqlen]
            mask = None
            if seqlen > 1:
                mask = lib.full((seqlen, seqlen), float("-inf"), device=tokens.device)
                mask = lib.triu(mask, diagonal=1)
                # (the cached positions are all visible: zeros before the causal block)
                mask = lib.hstack([lib.zeros((seqlen, start_pos), device=tokens.device),
                                   mask]).type_as(h)
            for layer in self.layers:
                h = layer(h, freqs_cos, freqs_sin, start_pos=start_pos, mask=mask)
            h = self.norm(h)
            return self.output(h).float()

        @lib.inference_mode()
        def generate_meta(self, idx, max_new_tokens, forward=None):
            """Greedy decoding through forward_meta (or `forward`, e.g. it compiled)."""
            forward = forward or self.forward_meta
            logits = forward(idx, start_pos=0)
            for i in range(max_new_tokens):
                idx_next = lib.argmax(logits[:, -1], dim=-1, keepdim=True)
                pos = idx.size(1)
                idx = lib.cat((idx, idx_next), dim=1)
                if i < max_new_tokens - 1:
                    logits = forward(idx_next, start_pos=pos)
            return idx

        @lib.inference_mode()
        def generate_uncached(self, idx, max_new_tokens):
            """llama2.c's loop: the whole sequence each step, the last position's argmax."""
            for _ in range(max_new_tokens):
                logits = self(idx)[:, -1, :]
                _, idx_next = lib.topk(logits, k=1, dim=-1)
                idx = lib.cat((idx, idx_next), dim=1)
            return idx

    return Transformer(args)


# -- the harness --------------------------------------------------------------------------------
def _state(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _pair(dtype: str, **kw):
    args = ModelArgs(upcast=dtype != "float64", **kw)
    torch.manual_seed(0)
    tmodel = make_llama(torch, args).to(getattr(torch, dtype))
    model = make_llama(tj, args).to(getattr(tj, dtype))
    assert list(_state(model)) == list(_state(tmodel))
    model.load_state_dict(_state(tmodel))
    # the rotary tables are non-persistent buffers, computed by each library in float32: their
    # cos/sin differ by an ulp, so a float64 run takes torch's to compare at float64 tolerances
    if dtype == "float64":
        for name in ("freqs_cos", "freqs_sin"):
            setattr(model, name, tj.tensor(getattr(tmodel, name).numpy()))
    assert model.tok_embeddings.weight is model.output.weight
    return tmodel, model


def _batch(seed: int = 0, batch: int = 3, seq: int = 12, vocab: int = 50):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, (batch, seq))
    y = np.roll(x, -1, axis=1)
    y[:, -1] = -1                # the last position has no next token
    y[1, :4] = -1                # nor a padded prefix
    return x, y


def _compare_arrays(got: dict, want: dict, what: str, rtol: float, atol: float) -> None:
    assert list(got) == list(want), what
    for name in want:
        assert got[name].dtype == want[name].dtype, (what, name)
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol,
                                   err_msg=f"{what} {name}")


VARIANTS = [dict(flash=True, repeat="expand", norm="hand"),
            dict(flash=False, repeat="interleave", norm="nn")]


def _ids(cfg):
    return "-".join(str(v) for v in cfg.values())


@pytest.mark.parametrize("cfg,dtype", [(VARIANTS[0], "float64"), (VARIANTS[1], "float32")],
                         ids=lambda v: _ids(v) if isinstance(v, dict) else v)
def test_llama_forward_loss_and_gradients_as_torch(cfg, dtype):
    tmodel, model = _pair(dtype, **cfg)
    x, y = _batch()
    tol = TOL[dtype]
    want_logits = tmodel(torch.tensor(x), torch.tensor(y))
    tmodel.last_loss.backward()
    logits = model(tj.tensor(x), tj.tensor(y))
    model.last_loss.backward()
    np.testing.assert_allclose(logits.detach().numpy(), want_logits.detach().numpy(), **tol)
    np.testing.assert_allclose(model.last_loss.item(), tmodel.last_loss.item(), **tol)
    _compare_arrays({k: p.grad.numpy() for k, p in model.named_parameters()},
                    {k: p.grad.numpy() for k, p in tmodel.named_parameters()}, "grad", **tol)
    # inference: the last position's logits only
    with tj.no_grad(), torch.no_grad():
        np.testing.assert_allclose(model(tj.tensor(x)).numpy(),
                                   tmodel(torch.tensor(x)).numpy(), **tol)


def test_llama_init_is_the_scaled_normal_and_tied():
    """`self.apply(self._init_weights)` and the wo/w3 rescale, on tracejit's own RNG."""
    model = make_llama(tj, ModelArgs(dim=64, n_layers=2))
    std = {n: p.detach().numpy().std() for n, p in model.named_parameters()}
    for name, s in std.items():
        if name.endswith(("w3.weight", "wo.weight")):
            assert abs(s - 0.02 / math.sqrt(4)) < 0.002, (name, s)
        elif name.endswith("norm.weight"):
            assert s == 0.0
        else:
            assert abs(s - 0.02) < 0.003, (name, s)
    # tied: named once, by its first module, as torch names it
    names = [n for n, _ in make_llama(torch, ModelArgs(dim=64, n_layers=2)).named_parameters()]
    assert list(std) == names and "output.weight" not in std
    assert model.tok_embeddings.weight is model.output.weight


STEPS = 3


def _train(lib, model, mode: str, x, y):
    tensor = torch.tensor if lib is torch else tj.tensor
    optimizer = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), "cpu")
    forward = tj.compile(model) if mode == "compiled_model" else model

    def step(X, Y):
        forward(X, Y)
        loss = model.last_loss
        loss.backward()
        lib.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss
    if mode == "compiled_step":
        step = tj.compile(step)
    model.train()
    losses = [step(tensor(x), tensor(y)).item() for _ in range(STEPS)]
    assert [len(g["params"]) for g in optimizer.param_groups] == [
        7 * len(model.layers) + 1, 2 * len(model.layers) + 1]
    # llama2.c's forward stores `self.last_loss`: a compiled call sets it each call from one
    # trace (tracer/attr_slots.py; it traced again every call before)
    compiled = forward if mode == "compiled_model" else step if mode == "compiled_step" else None
    if compiled is not None:
        assert compiled.cache_info().misses == 1, compiled.cache_info()
    return losses, _state(model)


@pytest.mark.parametrize("mode,dtype,cfg", [
    ("eager", "float64", VARIANTS[0]),
    ("compiled_model", "float32", VARIANTS[1]),
    ("compiled_step", "float32", VARIANTS[0])], ids=lambda v: _ids(v) if isinstance(v, dict)
    else v)
def test_llama_trains_with_adamw_decay_groups_as_torch(mode, dtype, cfg):
    tmodel, model = _pair(dtype, **cfg)
    x, y = _batch()
    want_losses, want_state = _train(torch, tmodel, "eager", x, y)
    got_losses, got_state = _train(tj, model, mode, x, y)
    assert want_losses[-1] < want_losses[0]
    np.testing.assert_allclose(got_losses, want_losses, **TOL[dtype])
    _compare_arrays(got_state, want_state, "state", rtol=TOL[dtype]["rtol"],
                    atol=PARAM_ATOL[dtype])


def test_llama_greedy_generation_with_a_kv_cache_as_torch():
    tmodel, model = _pair("float64", **VARIANTS[1])
    prompt = np.random.default_rng(1).integers(0, 50, (2, 5))
    want = tmodel.generate_greedy(torch.tensor(prompt), 6).numpy()
    got = model.generate_greedy(tj.tensor(prompt), 6)
    assert got.shape == (2, 11) and not got.requires_grad
    np.testing.assert_array_equal(got.numpy(), want)
    # the cache changes nothing: the uncached loop picks the same tokens
    np.testing.assert_array_equal(model.generate_uncached(tj.tensor(prompt), 6).numpy(), want)


def test_llama_meta_kv_cache_written_in_place_compiled_per_position_as_torch():
    """Meta's decoding: plain-attribute caches written in place at [start_pos, start_pos +
    seqlen), the prompt's mask hstacked after zeros; compiled with start_pos static (a traced
    int cannot bound a slice: one trace per position, kept for the next generation)."""
    tmodel, model = _pair("float32", **VARIANTS[0])
    prompt = np.random.default_rng(2).integers(0, 50, (2, 5))
    want = tmodel.generate_greedy(torch.tensor(prompt), 2).numpy()
    np.testing.assert_array_equal(tmodel.generate_meta(torch.tensor(prompt), 2).numpy(), want)
    forward = tj.compile(model.forward_meta, static_argnames=("start_pos",))
    for _ in range(2):           # the second generation overwrites the cache, reusing traces
        got = model.generate_meta(tj.tensor(prompt), 2, forward=forward)
        np.testing.assert_array_equal(got.numpy(), want)
    assert forward.cache_info()[:2] == (2, 2), forward.cache_info()      # (hits, misses)
    # a fresh cache (a new conversation) is read, not the one the traces first saw
    for layer in model.layers:
        layer.attention.cache_k = tj.full(layer.attention.cache_k.shape, float("nan"))
    assert np.isnan(forward(tj.tensor(prompt[:, :1]), start_pos=5).numpy()).all()
