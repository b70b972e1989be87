"""nanoGPT (tests/nn/nanogpt_model.py, ported by changing only the imports) under autocast to
bfloat16 against the same model under torch's CPU autocast: loss and every gradient agree to
bfloat16 tolerance, eagerly and compiled."""
import numpy as np
import pytest
import torch

import tracejit as tj
from nanogpt_helpers import torch_twin

def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("flash,compiled", [(True, False), (False, False), (True, True)])
def test_nanogpt_autocast_bf16_matches_torch(flash, compiled):
    tm, m = torch_twin("nanogpt_amp", flash)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 32, (4, 16))
    tgt = rng.integers(0, 32, (4, 16))
    tgt[0, :3] = -1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tlogits, tl = tm(torch.tensor(idx), torch.tensor(tgt))
    tl.backward()

    def step(i, t):
        with tj.autocast("cpu", dtype=tj.bfloat16):
            return m(i, t)
    fn = tj.compile(step) if compiled else step
    logits, loss = fn(tj.tensor(idx), tj.tensor(tgt))
    loss.backward()
    assert logits.dtype is tj.bfloat16 and tlogits.dtype is torch.bfloat16
    assert loss.dtype is tj.float32 and tl.dtype is torch.float32
    assert abs(loss.item() - tl.item()) < 1e-2 * abs(tl.item())
    assert _rel(logits.float().detach().numpy(), tlogits.float().detach().numpy()) < 2e-2
    for (n, p), (tn, tp) in zip(m.named_parameters(), tm.named_parameters()):
        assert n == tn and p.grad.dtype is tj.float32
        assert _rel(p.grad.numpy(), tp.grad.numpy()) < 5e-2, n
    # and it is mixed precision: the float32 loss differs from autocast's by more than rounding
    _, full = m(tj.tensor(idx), tj.tensor(tgt))
    assert abs(full.item() - loss.item()) > 1e-6
