"""nanoGPT's model.py ported by changing only its imports (tests/nn/nanogpt_model.py): load it
for tracejit or, with torch's imports put back, for torch, and build a torch GPT and its tracejit
twin holding the same weights. Shared by the nanoGPT tests in amp/, models/ and nn/.
(No `from __future__ import annotations` here: compile() would pass it on to the model's
source, and its dataclass would then look its module up in sys.modules.)"""
import os
import types

MODEL = os.path.join(os.path.dirname(__file__), "nn", "nanogpt_model.py")
TORCH_IMPORTS = (("import tracejit as torch", "import torch"),
                 ("import tracejit.nn as nn", "import torch.nn as nn"),
                 ("from tracejit.nn import functional as F",
                  "from torch.nn import functional as F"))


def load_nanogpt(lib: str, name: str = "nanogpt") -> types.ModuleType:
    """The model's source with tracejit's imports (lib "tracejit"), or with torch's put back
    (lib "torch"), run as a fresh module named f"{name}_{lib}"."""
    src = open(MODEL).read()
    if lib == "torch":
        for a, b in TORCH_IMPORTS:
            assert a in src
            src = src.replace(a, b)
    mod = types.ModuleType(f"{name}_{lib}")
    exec(compile(src, MODEL, "exec"), mod.__dict__)
    return mod


def torch_twin(name: str = "nanogpt", flash: bool | None = None, double: bool = False, **cfg):
    """(torch GPT, tracejit GPT): GPTConfig(**cfg), the torch one initialised under
    torch.manual_seed(0) and its state_dict loaded into the tracejit one; FLASH set in both
    modules unless flash is None; both in float64 if double."""
    import torch
    tmod, jmod = load_nanogpt("torch", name), load_nanogpt("tracejit", name)
    if flash is not None:
        tmod.FLASH = jmod.FLASH = flash
    torch.manual_seed(0)
    tm = tmod.GPT(tmod.GPTConfig(**cfg))
    if double:
        tm = tm.double()
    m = jmod.GPT(jmod.GPTConfig(**cfg))
    if double:
        m = m.double()
    m.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    return tm, m


def compiled_training_steps(mod: types.ModuleType, cfg, lr: float, modes: tuple) -> tuple:
    """(models, steps): one copy of `mod`'s GPT(cfg) per tj.compile mode, all with the first's
    weights and on "cuda", each with its AdamW training step (forward, backward, step,
    zero_grad; returns the loss) compiled in that mode."""
    import tracejit as tj
    models = [mod.GPT(cfg) for _ in modes]
    for m in models[1:]:
        m.load_state_dict(models[0].state_dict())
    steps = []
    for m, mode in zip(models, modes):
        m.to("cuda")
        opt = tj.optim.AdamW(m.parameters(), lr=lr)

        def step(idx, tgt, m=m, opt=opt):
            _, loss = m(idx, tgt)
            loss.backward()
            opt.step()
            opt.zero_grad()
            return loss
        steps.append(tj.compile(step, mode=mode))
    return models, steps


def value_and_grad_step(model):
    """A step returning (loss, the parameters' gradients) of `model`'s GPT on (idx, tgt), leaving
    every .grad None (to compile or run eagerly)."""
    params = list(model.parameters())

    def step(idx, tgt):
        _, loss = model(idx, tgt)
        loss.backward()
        grads = [p.grad for p in params]
        for p in params:
            p.grad = None
        return loss, grads
    return step


def lowered_gpt_step(name: str, n_layer: int, n_head: int, n_embd: int, vocab_size: int,
                     batch: int, block_size: int):
    """The executable of tj.compile(value_and_grad_step(model)) lowered for a fresh tracejit
    GPT of that shape (seeded) on random tokens: its .graph and .plan for codegen tests."""
    import numpy as np
    import tracejit as tj
    mod = load_nanogpt("tracejit", name)
    cfg = mod.GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                        vocab_size=vocab_size, dropout=0.0, bias=True)
    tj.manual_seed(0)
    model = mod.GPT(cfg)
    rng = np.random.default_rng(0)
    idx = tj.tensor(rng.integers(0, vocab_size, (batch, block_size)))
    tgt = tj.tensor(rng.integers(0, vocab_size, (batch, block_size)))
    return tj.compile(value_and_grad_step(model)).lower(idx, tgt)._entry.exe
