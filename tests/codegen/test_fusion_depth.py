"""Compile cost grows with distinct kernels, not with depth: every layer of a deeper nanoGPT
fuses into the same kernels as a shallower one's (fusion's shared-expression limit once cut
the residual stream at places that shifted with depth: 45 distinct kernels at 8 layers,
37 at 4)."""
import re

import numpy as np
import pytest

import tracejit as tj
from nanogpt_helpers import load_nanogpt, value_and_grad_step


def _step(layers: int):
    """A compiled value-and-grad step of a small nanoGPT (activations of 8192 elements, above
    the cost model's MIN_ELEMENTS), its inputs and the model's parameters."""
    mod = load_nanogpt("tracejit", f"fusion_depth_{layers}")
    cfg = mod.GPTConfig(n_layer=layers, n_head=2, n_embd=64, block_size=32, vocab_size=17,
                        dropout=0.0, bias=True)
    tj.manual_seed(0)
    model = mod.GPT(cfg)
    step = value_and_grad_step(model)
    rng = np.random.default_rng(layers)
    idx = tj.tensor(rng.integers(0, 17, (4, 32)))
    tgt = tj.tensor(rng.integers(0, 17, (4, 32)))
    return step, idx, tgt


def _distinct(layers: int) -> int:
    step, idx, tgt = _step(layers)
    prog = tj.compile(step).lower(idx, tgt).program
    return int(re.search(r"kernel calls of (\d+) distinct", prog).group(1))


def test_deeper_model_adds_no_distinct_kernels():
    assert _distinct(8) == _distinct(4)


@pytest.mark.parametrize("layers", [8])
def test_deep_model_step_matches_eager(layers):
    step, idx, tgt = _step(layers)
    want_loss, want = step(idx, tgt)
    got_loss, got = tj.compile(step)(idx, tgt)
    np.testing.assert_allclose(got_loss.detach().numpy(), want_loss.detach().numpy(), rtol=1e-5, atol=1e-6)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.detach().numpy(), w.detach().numpy(), rtol=2e-3, atol=2e-5)
