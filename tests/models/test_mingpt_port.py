"""A minGPT-style GPT as people write it (nn.MultiheadAttention(batch_first=True) with a causal
boolean attn_mask from torch.triu, nn.Embedding(padding_idx=0), weight tying, GELU MLP in a
ModuleDict, `self.apply(self._init_weights)` plus the scaled c_proj init, minGPT's
configure_optimizers walking named_modules() into decay / no-decay AdamW groups, cross entropy
with ignore_index=-1, clip_grad_norm_, and a @no_grad generate() with topk masking and
multinomial), written once against `lib` and run on tracejit and on torch from one state_dict.
Three AdamW steps agree (losses, gradients, parameters, eagerly and as one compiled step),
greedy generation gives torch's tokens, top-k sampling stays inside torch's top k, and
tj.save / tj.load round-trips the checkpoint (tied weights stay tied; torch loads it too)."""
import math

import numpy as np
import pytest

import tracejit as tj
from models.harness import training_step

torch = pytest.importorskip("torch")

VOCAB, BLOCK = 13, 8


def make_gpt(lib, d=16, n_head=2, n_layer=2, pdrop=0.0):
    nn = lib.nn
    F = lib.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, n_head, dropout=pdrop, batch_first=True)
            self.ln_2 = nn.LayerNorm(d)
            self.mlp = nn.ModuleDict(dict(c_fc=nn.Linear(d, 4 * d), c_proj=nn.Linear(4 * d, d),
                                          act=nn.GELU(), dropout=nn.Dropout(pdrop)))
            m = self.mlp
            self.mlpf = lambda x: m.dropout(m.c_proj(m.act(m.c_fc(x))))

        def forward(self, x, mask):
            h = self.ln_1(x)
            x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
            return x + self.mlpf(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.block_size = BLOCK
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(VOCAB, d, padding_idx=0),
                wpe=nn.Embedding(BLOCK, d),
                drop=nn.Dropout(pdrop),
                h=nn.ModuleList([Block() for _ in range(n_layer)]),
                ln_f=nn.LayerNorm(d)))
            self.lm_head = nn.Linear(d, VOCAB, bias=False)
            self.transformer.wte.weight = self.lm_head.weight
            self.apply(self._init_weights)
            for pn, p in self.named_parameters():
                if pn.endswith("c_proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

        def _init_weights(self, module):
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, nn.LayerNorm):
                nn.init.zeros_(module.bias)
                nn.init.ones_(module.weight)

        def configure_optimizers(self, weight_decay=0.1, lr=3e-3, betas=(0.9, 0.95)):
            decay, no_decay = set(), set()
            whitelist = (nn.Linear, nn.MultiheadAttention)
            blacklist = (nn.LayerNorm, nn.Embedding)
            for mn, m in self.named_modules():
                for pn, p in m.named_parameters():
                    fpn = "%s.%s" % (mn, pn) if mn else pn
                    if pn.endswith("bias"):
                        no_decay.add(fpn)
                    elif pn.endswith("weight") and isinstance(m, whitelist):
                        decay.add(fpn)
                    elif pn.endswith("weight") and isinstance(m, blacklist):
                        no_decay.add(fpn)
            param_dict = {pn: p for pn, p in self.named_parameters()}
            decay &= param_dict.keys()          # a tied weight is listed once, by its first name
            no_decay &= param_dict.keys()
            assert not decay & no_decay and param_dict.keys() == decay | no_decay
            groups = [
                {"params": [param_dict[pn] for pn in sorted(decay)], "weight_decay": weight_decay},
                {"params": [param_dict[pn] for pn in sorted(no_decay)], "weight_decay": 0.0}]
            return lib.optim.AdamW(groups, lr=lr, betas=betas)

        def forward(self, idx, targets=None):
            b, t = idx.size()
            pos = lib.arange(0, t, dtype=lib.long).unsqueeze(0)
            mask = lib.triu(lib.ones(t, t, dtype=lib.bool), diagonal=1)
            x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
            for block in self.transformer.h:
                x = block(x, mask)
            logits = self.lm_head(self.transformer.ln_f(x))
            loss = None
            if targets is not None:
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                                       ignore_index=-1)
            return logits, loss

        @lib.no_grad()
        def generate(self, idx, max_new_tokens, temperature=1.0, do_sample=False, top_k=None):
            for _ in range(max_new_tokens):
                idx_cond = idx if idx.size(1) <= self.block_size else idx[:, -self.block_size:]
                logits, _ = self(idx_cond)
                logits = logits[:, -1, :] / temperature
                if top_k is not None:
                    v, _ = lib.topk(logits, top_k)
                    logits[logits < v[:, [-1]]] = -float("Inf")
                probs = F.softmax(logits, dim=-1)
                if do_sample:
                    idx_next = lib.multinomial(probs, num_samples=1)
                else:
                    _, idx_next = lib.topk(probs, k=1, dim=-1)
                idx = lib.cat((idx, idx_next), dim=1)
            return idx

    return GPT()


def _sd(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _pair(dtype: str = "float64", **kw):
    torch.manual_seed(0)
    tmodel = make_gpt(torch, **kw).to(getattr(torch, dtype))
    model = make_gpt(tj, **kw).to(getattr(tj, dtype))
    assert list(_sd(model)) == list(_sd(tmodel))
    model.load_state_dict(_sd(tmodel))
    assert model.transformer.wte.weight is model.lm_head.weight
    return tmodel, model


def _batch():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, VOCAB, (3, BLOCK)), rng.integers(0, VOCAB, (3, BLOCK))
    x[1, :2] = 0                 # padding tokens
    y[0, :3] = -1                # ignored targets
    return x, y


def _train(lib, model, x, y, compiled):
    step = training_step(lib, model, model.configure_optimizers(),
                         lambda m, x, y: m(x, y)[1], compiled)
    model.train()
    losses = [step(lib.tensor(x), lib.tensor(y)).item() for _ in range(3)]
    return losses, {k: p.grad.numpy().copy() for k, p in model.named_parameters()}, _sd(model)


@pytest.mark.parametrize("dtype,compiled", [("float64", False), ("float64", True),
                                            ("float32", True)])
def test_three_adamw_steps_match_torch(dtype, compiled):
    tmodel, model = _pair(dtype)
    x, y = _batch()
    want = _train(torch, tmodel, x, y, False)
    got = _train(tj, model, x, y, compiled)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(got[0], want[0], **tol)
    assert want[0][-1] < want[0][0]
    for g, w in zip(got[1:], want[1:]):
        assert list(g) == list(w)
        for k in w:
            if dtype == "float32" and k.endswith("in_proj_bias"):
                # its key third has a gradient of exactly 0 (a key bias adds one constant to a
                # softmax row), so in float32 both libraries see only rounding noise (~1e-4),
                # which Adam then scales up to +-lr steps: compare the query and value thirds
                third = w[k].shape[0] // 3
                g[k], w[k] = np.delete(g[k], np.s_[third:2 * third]), np.delete(
                    w[k], np.s_[third:2 * third])
            np.testing.assert_allclose(g[k], w[k], err_msg=k, **tol)


def test_generation_greedy_is_torchs_and_top_k_samples_stay_in_torchs_top_k():
    tmodel, model = _pair(pdrop=0.1)          # eval mode: dropout off on both
    tmodel.eval()
    model.eval()
    prompt = _batch()[0][:, :3]
    new = 7                                    # runs past block_size: the context is cropped
    want = tmodel.generate(torch.tensor(prompt), new).numpy()
    np.testing.assert_array_equal(model.generate(tj.tensor(prompt), new).numpy(), want)
    k = 3
    tj.manual_seed(1)
    sampled = model.generate(tj.tensor(prompt), new, do_sample=True, top_k=k).numpy()
    tj.manual_seed(1)
    np.testing.assert_array_equal(
        model.generate(tj.tensor(prompt), new, do_sample=True, top_k=k).numpy(), sampled)
    assert sampled.shape == (3, 3 + new)
    np.testing.assert_array_equal(sampled[:, :3], prompt)
    with torch.no_grad():
        for t in range(3, 3 + new):
            context = torch.tensor(sampled[:, max(0, t - BLOCK):t])
            top = torch.topk(tmodel(context)[0][:, -1, :], k).indices.numpy()
            for row in range(3):
                assert sampled[row, t] in top[row], (row, t)
    assert not np.array_equal(sampled, want)   # sampling does not just return the argmax


def test_checkpoint_round_trip_keeps_ties_and_loads_into_torch(tmp_path):
    tmodel, model = _pair()
    x, y = _batch()
    _train(tj, model, x, y, False)
    path = tmp_path / "ckpt.pt"
    tj.save({"model": model.state_dict(), "iter_num": 3}, path)
    ckpt = tj.load(path)
    fresh = make_gpt(tj).double()
    fresh.load_state_dict(ckpt["model"])
    assert ckpt["iter_num"] == 3 and fresh.transformer.wte.weight is fresh.lm_head.weight
    tmodel.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ckpt["model"].items()})
    for m in (model, fresh, tmodel):
        m.eval()
    with torch.no_grad():
        want = tmodel(torch.tensor(x))[0].numpy()
    with tj.no_grad():
        for m in (model, fresh):
            np.testing.assert_allclose(m(tj.tensor(x))[0].numpy(), want, rtol=1e-10, atol=1e-12)
