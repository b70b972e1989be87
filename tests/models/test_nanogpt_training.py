"""nanoGPT trained as its train.py does, on tracejit and on torch from the same weights.

The model is nanoGPT's model.py ported by changing only its imports (tests/nn/nanogpt_model.py,
shared with the nn and amp tests). A torch GPT is built, its state_dict loaded into the tracejit
GPT through .numpy(), and both train five AdamW steps from `configure_optimizers` (decay and
no-decay groups), with nanoGPT's warmup + cosine lr written into `param_groups` before every
step and the gradient clipped to norm 1.0. tracejit runs the loop three ways: eagerly, with
`tj.compile(model)` (compiled forward and backward, eager clip and optimizer), and with the whole
step (forward, backward, clip, AdamW, zero_grad) compiled as one graph."""
import math

import numpy as np
import pytest
import torch

import tracejit as tj
from nanogpt_helpers import load_nanogpt

CONFIG = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=65, dropout=0.0,
              bias=True)
STEPS, BATCH = 5, 4
LOSS_TOL = {"float32": dict(rtol=1e-4, atol=0), "float64": dict(rtol=1e-12, atol=0)}
# Adam divides each update by sqrt(v): where a gradient element is near zero its step is nearly
# +-lr whatever its size, so float32 rounding in the gradient moves a parameter by up to ~0.2% of
# the peak lr (measured 1.4e-5 at lr 6e-3). float64 agrees to ~3e-14.
PARAM_TOL = {"float32": dict(rtol=1e-4, atol=5e-5), "float64": dict(rtol=1e-10, atol=1e-12)}


def get_lr(it: int, learning_rate=6e-3, warmup_iters=2, lr_decay_iters=5, min_lr=6e-4) -> float:
    """train.py's schedule: linear warmup, then cosine down to min_lr."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


def _batches(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    t = CONFIG["block_size"]
    v = CONFIG["vocab_size"]
    out = []
    for _ in range(STEPS):
        # a learnable text: every token fixes the next one, from random starting points
        data = (rng.integers(0, v, (BATCH, 1)) + 7 * np.arange(t + 1)) % v
        out.append((data[:, :-1], data[:, 1:]))
    return out


def _train(lib, model, forward):
    """train.py's inner loop, spelled the same for both libraries; `lib` is torch or tracejit."""
    optimizer = model.configure_optimizers(0.1, get_lr(0), (0.9, 0.95), "cpu")

    def step(X, Y):
        logits, loss = forward(X, Y)
        loss.backward()
        lib.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss
    return optimizer, step


def _run_torch(dtype: str, flash: bool = True):
    tmod = load_nanogpt("torch", "nanogpt_train")
    tmod.FLASH = flash
    torch.manual_seed(0)
    model = tmod.GPT(tmod.GPTConfig(**CONFIG)).to(getattr(torch, dtype))
    start = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    optimizer, step = _train(torch, model, model)
    losses = []
    for it, (x, y) in enumerate(_batches()):
        for group in optimizer.param_groups:
            group["lr"] = get_lr(it)
        losses.append(step(torch.tensor(x), torch.tensor(y)).item())
    params = {n: p.detach().numpy() for n, p in model.named_parameters()}
    return start, losses, params, model


def _run_tracejit(start, dtype: str, mode: str, flash: bool = True):
    jmod = load_nanogpt("tracejit", "nanogpt_train")
    jmod.FLASH = flash
    model = jmod.GPT(jmod.GPTConfig(**CONFIG)).to(getattr(tj, dtype))
    model.load_state_dict(start)
    forward = tj.compile(model) if mode == "compiled_model" else model
    optimizer, step = _train(tj, model, forward)
    if mode == "compiled_step":
        step = tj.compile(step)
    losses = []
    for it, (x, y) in enumerate(_batches()):
        for group in optimizer.param_groups:
            group["lr"] = get_lr(it)
        losses.append(step(tj.tensor(x), tj.tensor(y)).item())
    params = {n: p.detach().numpy() for n, p in model.named_parameters()}
    return model, losses, params


SLOW = pytest.mark.slow       # each compiled mode traces and compiles the model (~15 s here)


@pytest.mark.parametrize("mode,dtype,flash", [
    ("eager", "float32", True), ("eager", "float64", True),
    ("eager", "float64", False),         # the explicit causal-mask buffer instead of sdpa
    pytest.param("compiled_model", "float32", True, marks=SLOW),
    pytest.param("compiled_step", "float32", True, marks=SLOW),
    pytest.param("compiled_step", "float64", True, marks=SLOW)])
def test_nanogpt_trains_five_adamw_steps_as_torch(mode, dtype, flash):
    start, t_losses, t_params, _ = _run_torch(dtype, flash)
    model, losses, params = _run_tracejit(start, dtype, mode, flash)
    np.testing.assert_allclose(losses, t_losses, **LOSS_TOL[dtype])
    assert losses[-1] < losses[0]                      # it learns: the comparison is not vacuous
    assert list(params) == list(t_params)              # tied wte/lm_head counted once, same order
    for name, p in params.items():
        assert p.dtype == np.dtype(dtype), name
        np.testing.assert_allclose(p, t_params[name], err_msg=name, **PARAM_TOL[dtype])
    assert model.transformer.wte.weight is model.lm_head.weight
    assert all(p.grad is None for p in model.parameters())   # zero_grad(set_to_none=True)


def test_nanogpt_generate_after_training_as_torch():
    start, _, t_params, tmodel = _run_torch("float64")
    model, _, _, = _run_tracejit(start, "float64", "eager")
    prompt = _batches(1)[0][0][:2, :5]
    # greedy: top_k=1 leaves one token with probability 1, so multinomial must pick it
    greedy = model.generate(tj.tensor(prompt), 14, top_k=1).numpy()
    t_greedy = tmodel.generate(torch.tensor(prompt), 14, top_k=1).numpy()
    assert greedy.shape == (2, 19)          # longer than block_size: generate crops the context
    np.testing.assert_array_equal(greedy, t_greedy)
    # sampled: reproducible under a seed, tokens in range, the prompt kept
    tj.manual_seed(3)
    a = model.generate(tj.tensor(prompt), 6, temperature=0.8, top_k=5).numpy()
    tj.manual_seed(3)
    b = model.generate(tj.tensor(prompt), 6, temperature=0.8, top_k=5).numpy()
    np.testing.assert_array_equal(a, b)
    assert (a[:, :5] == prompt).all() and a.min() >= 0 and a.max() < CONFIG["vocab_size"]


def test_crop_block_size_surgery_and_fused_flag_as_torch():
    """nanoGPT's crop_block_size (left out of the ported file) does model surgery that must work
    unchanged: a sliced Parameter replaces wpe's weight, and a sliced tensor replaces the
    registered mask buffer; configure_optimizers on 'cuda' passes AdamW(fused=True)."""
    models, start = {}, None
    for lib, name in ((torch, "torch"), (tj, "tracejit")):
        mod = load_nanogpt(name, "nanogpt_train")
        mod.FLASH = False
        torch.manual_seed(0)
        models[name] = model = mod.GPT(mod.GPTConfig(**CONFIG)).double()
        if start is None:
            start = {k: v.numpy().copy() for k, v in model.state_dict().items()}
        else:
            model.load_state_dict(start)
        block_size = 8
        model.config.block_size = block_size
        model.transformer.wpe.weight = lib.nn.Parameter(model.transformer.wpe.weight[:block_size])
        for block in model.transformer.h:
            if hasattr(block.attn, "bias"):
                block.attn.bias = block.attn.bias[:, :, :block_size, :block_size]
    t, j = models["torch"], models["tracejit"]
    assert [(k, tuple(v.shape)) for k, v in j.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in t.state_dict().items()]
    assert [n for n, _ in j.named_buffers()] == [n for n, _ in t.named_buffers()]
    x, y = _batches(2)[0]
    _, loss = j(tj.tensor(x[:, :8]), tj.tensor(y[:, :8]))
    _, t_loss = t(torch.tensor(x[:, :8]), torch.tensor(y[:, :8]))
    np.testing.assert_allclose(loss.item(), t_loss.item(), rtol=1e-12)
    loss.backward()
    assert j.transformer.wpe.weight.grad.shape == (8, CONFIG["n_embd"])
    assert j.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cuda").defaults["fused"] is True
