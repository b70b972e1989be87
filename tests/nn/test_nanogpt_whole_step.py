"""nanoGPT (tests/nn/nanogpt_model.py, ported by changing only its imports): five AdamW steps
with a changing learning rate, its own configure_optimizers and gradient clipping, as one
compiled graph per step, give torch's losses and parameters."""
import numpy as np
import pytest

import tracejit as tj
from conftest import assert_close
from nanogpt_helpers import torch_twin

torch = pytest.importorskip("torch")


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
    cfg = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=32, dropout=0.0)
    tm, m = torch_twin("nanogpt_whole_step", double=True, **cfg)
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
