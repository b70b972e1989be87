"""nanoGPT's model, ported by changing only its imports, against the same code on torch:
loaded torch state_dict, loss and every parameter gradient (float64), eager and compiled,
with scaled_dot_product_attention and with the explicit causal mask; generate() runs."""
import numpy as np
import pytest
import torch

import tracejit as tj
from conftest import assert_close
from nanogpt_helpers import torch_twin

def _pair(flash: bool, **cfg):
    tm, m = torch_twin("nanogpt", flash, double=True, **cfg)
    rng = np.random.default_rng(0)
    t = tm.config.block_size
    idx = rng.integers(0, 32, (3, t))
    tgt = rng.integers(0, 32, (3, t))
    tgt[0, :3] = -1                                    # ignored positions (ignore_index=-1)
    _, tl = tm(torch.tensor(idx), torch.tensor(tgt))
    tl.backward()
    return tm, m, idx, tgt, tl


@pytest.mark.parametrize("flash", [True, False])
def test_nanogpt_matches_torch(flash):
    tm, m, idx, tgt, tl = _pair(flash)
    assert m.get_num_params() == tm.get_num_params()
    assert repr(m) == repr(tm)
    _, loss = m(tj.tensor(idx), tj.tensor(tgt))
    assert_close(loss, tl.detach().numpy(), 1e-12, 1e-12)
    loss.backward()
    for (n, p), (tn, tp) in zip(m.named_parameters(), tm.named_parameters()):
        assert n == tn
        assert_close(p.grad, tp.grad.numpy(), 1e-9, 1e-12)
    logits, none = m(tj.tensor(idx))
    tlogits, _ = tm(torch.tensor(idx))
    assert none is None and logits.shape == (3, 1, 32)
    assert_close(logits, tlogits.detach().numpy(), 1e-12, 1e-12)
    out = m.generate(tj.tensor(idx[:, :4]), 3, top_k=5)
    assert out.shape == (3, 7) and (out.numpy()[:, :4] == idx[:, :4]).all()


@pytest.mark.slow
def test_nanogpt_compiled_forward_and_backward():
    tm, m, idx, tgt, tl = _pair(True, n_layer=1, block_size=8)
    _, closs = tj.compile(m)(tj.tensor(idx), tj.tensor(tgt))
    assert_close(closs, tl.detach().numpy(), 1e-12, 1e-12)
    closs.backward()
    for (n, p), (tn, tp) in zip(m.named_parameters(), tm.named_parameters()):
        assert_close(p.grad, tp.grad.numpy(), 1e-9, 1e-12)
