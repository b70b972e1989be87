"""nanoGPT (tests/nn/nanogpt_model.py, ported by changing only its imports): five AdamW steps
with a changing learning rate, its own configure_optimizers and gradient clipping, as one
compiled graph per step, give torch's losses and parameters."""
import os
import types

import numpy as np
import pytest

import tracejit as tj
from conftest import assert_close

torch = pytest.importorskip("torch")
MODEL = os.path.join(os.path.dirname(__file__), "nanogpt_model.py")


def _load(lib: str) -> types.ModuleType:
    """The model's source with tracejit's imports, or with torch's put back."""
    src = open(MODEL).read()
    if lib == "torch":
        for a, b in (("import tracejit as torch", "import torch"),
                     ("import tracejit.nn as nn", "import torch.nn as nn"),
                     ("from tracejit.nn import functional as F",
                      "from torch.nn import functional as F")):
            src = src.replace(a, b)
    mod = types.ModuleType(f"nanogpt_whole_step_{lib}")
    exec(compile(src, MODEL, "exec"), mod.__dict__)
    return mod


def _step(lib, model, opt):
    def step(idx, tgt):
        _, loss = model(idx, tgt)
        loss.backward()
        lib.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return step


@pytest.mark.slow
def test_nanogpt_whole_step_compiled_matches_torch():
    tmod, jmod = _load("torch"), _load("tracejit")
    cfg = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=32, dropout=0.0)
    torch.manual_seed(0)
    tm = tmod.GPT(tmod.GPTConfig(**cfg)).double()
    m = jmod.GPT(jmod.GPTConfig(**cfg)).double()
    m.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    topt = tm.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    opt = m.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    tstep, step = _step(torch, tm, topt), tj.compile(_step(tj, m, opt))
    rng = np.random.default_rng(0)
    for i in range(5):
        idx, tgt = rng.integers(0, 32, (4, 8)), rng.integers(0, 32, (4, 8))
        for o in (opt, topt):
            for g in o.param_groups:
                g["lr"] = 1e-3 * (i + 1) / 5                 # warmup: a runtime input
        loss = step(tj.tensor(idx), tj.tensor(tgt))
        tloss = tstep(torch.tensor(idx), torch.tensor(tgt))
        assert_close(loss, tloss.detach().numpy(), 1e-10, 1e-12)
    for (n, p), (tn, tp) in zip(m.named_parameters(), tm.named_parameters()):
        assert n == tn and p.grad is None
        assert_close(p, tp.detach().numpy(), 1e-9, 1e-12)
    assert step.cache_info().misses == 1
