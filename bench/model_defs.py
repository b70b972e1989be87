"""The models of bench/models.py, each written once as PyTorch code against a `lib` (torch or
tracejit), so that both run the same program from the same weights.

- nanoGPT: tests/nn/nanogpt_model.py (Karpathy's model.py, ported by changing its imports), with
  its own configure_optimizers (AdamW, weight decay on matrices);
- makemore's MLP (Bengio et al. 2003 as Karpathy writes it): embedding table, tanh layer,
  cross-entropy over the next character;
- an LSTM cell (torch.nn.LSTMCell's equations and parameter names) unrolled over 20 steps, with
  a linear read-out of every hidden state and a mean squared error;
- a small CNN: Conv2d-ReLU-MaxPool2d twice, then Linear, cross-entropy (MNIST-sized images).

A workload is its model, one batch of data (NumPy, converted per library) and its loss."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from nanogpt_helpers import load_nanogpt  # noqa: E402


@dataclass
class Workload:
    name: str
    build: Callable            # build(lib) -> model (a lib.nn.Module)
    data: Callable             # data(rng) -> tuple of NumPy arrays (one batch)
    loss: Callable             # loss(lib, model, *batch) -> scalar tensor
    optimizer: Callable        # optimizer(lib, model, device) -> lib.optim optimizer
    autocast: bool = False     # run the model under autocast to bfloat16 (the GPU variant)
    cfg: dict = field(default_factory=dict)


def _adamw(lib, model, device):
    return lib.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)


# -- nanoGPT ------------------------------------------------------------------------------------
_NANOGPT = {}


def _nanogpt_module(lib):
    key = lib.__name__
    if key not in _NANOGPT:
        _NANOGPT[key] = load_nanogpt("torch" if key == "torch" else "tracejit", "bench_nanogpt")
    return _NANOGPT[key]


def nanogpt(name, batch, seq, n_embd, n_head, n_layer, vocab=65, autocast=False) -> Workload:
    cfg = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=seq, vocab_size=vocab,
               dropout=0.0, bias=True)

    def build(lib):
        mod = _nanogpt_module(lib)
        return mod.GPT(mod.GPTConfig(**cfg))

    def data(rng):
        return (rng.integers(0, vocab, (batch, seq)), rng.integers(0, vocab, (batch, seq)))

    def loss(lib, model, idx, tgt):
        return model(idx, tgt)[1]

    def optimizer(lib, model, device):
        return model.configure_optimizers(0.1, 3e-4, (0.9, 0.95), device)
    return Workload(name, build, data, loss, optimizer, autocast,
                    dict(cfg, batch=batch))


# -- makemore MLP -------------------------------------------------------------------------------
MM_VOCAB, MM_BLOCK, MM_EMBD, MM_HIDDEN, MM_BATCH = 27, 3, 10, 200, 32


def _makemore_build(lib):
    nn = lib.nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.C = nn.Embedding(MM_VOCAB, MM_EMBD)
            self.l1 = nn.Linear(MM_BLOCK * MM_EMBD, MM_HIDDEN)
            self.l2 = nn.Linear(MM_HIDDEN, MM_VOCAB)

        def forward(self, x):
            emb = self.C(x)
            h = lib.tanh(self.l1(emb.view(emb.shape[0], -1)))
            return self.l2(h)
    return MLP()


def _makemore_data(rng):
    return (rng.integers(0, MM_VOCAB, (MM_BATCH, MM_BLOCK)), rng.integers(0, MM_VOCAB, MM_BATCH))


def _makemore_loss(lib, model, x, y):
    return lib.nn.functional.cross_entropy(model(x), y)


# -- LSTM -----------------------------------------------------------------------------------------
LSTM_STEPS, LSTM_BATCH, LSTM_IN, LSTM_HIDDEN, LSTM_OUT = 20, 8, 16, 32, 8


def _lstm_build(lib):
    nn = lib.nn
    H = LSTM_HIDDEN

    class LSTM(nn.Module):
        """torch.nn.LSTMCell's parameters and equations, unrolled, with a linear read-out."""

        def __init__(self):
            super().__init__()
            k = 1 / H ** 0.5
            self.weight_ih = nn.Parameter(lib.empty(4 * H, LSTM_IN).uniform_(-k, k))
            self.weight_hh = nn.Parameter(lib.empty(4 * H, H).uniform_(-k, k))
            self.bias_ih = nn.Parameter(lib.empty(4 * H).uniform_(-k, k))
            self.bias_hh = nn.Parameter(lib.empty(4 * H).uniform_(-k, k))
            self.out = nn.Linear(H, LSTM_OUT)

        def forward(self, x, y):
            h = lib.zeros(x.shape[1], H, device=x.device)
            c = lib.zeros(x.shape[1], H, device=x.device)
            total = 0.0
            for t in range(x.shape[0]):
                gates = x[t] @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh
                i, f, g, o = gates.chunk(4, 1)
                c = lib.sigmoid(f) * c + lib.sigmoid(i) * lib.tanh(g)
                h = lib.sigmoid(o) * lib.tanh(c)
                total = total + lib.nn.functional.mse_loss(self.out(h), y[t])
            return total / x.shape[0]
    return LSTM()


def _lstm_data(rng):
    return (rng.standard_normal((LSTM_STEPS, LSTM_BATCH, LSTM_IN)).astype(np.float32),
            rng.standard_normal((LSTM_STEPS, LSTM_BATCH, LSTM_OUT)).astype(np.float32))


def _lstm_loss(lib, model, x, y):
    return model(x, y)


# -- CNN ------------------------------------------------------------------------------------------
CNN_BATCH = 32


def _cnn_build(lib):
    nn = lib.nn
    return nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10))


def _cnn_data(rng):
    return (rng.standard_normal((CNN_BATCH, 1, 28, 28)).astype(np.float32),
            rng.integers(0, 10, CNN_BATCH))


def _cnn_loss(lib, model, x, y):
    return lib.nn.functional.cross_entropy(model(x), y)


def workloads(device: str, big: bool, tiny: bool = False) -> list[Workload]:
    """The benchmark's workloads for `device`; `tiny` shrinks the nanoGPTs (for tests)."""
    small = (8, 64, 128, 4, 2) if not tiny else (2, 8, 16, 2, 1)
    large = (16, 256, 512, 8, 4) if not tiny else (2, 16, 32, 2, 2)
    # on the GPU the goals' workloads first: a session cut short by its time limit still has them
    out = [nanogpt("nanogpt_12.8M", *large), nanogpt("nanogpt_12.8M_bf16", *large, autocast=True)] \
        if device == "cuda" else []
    out.append(nanogpt("nanogpt_small", *small))
    if device != "cuda" and big:
        out.append(nanogpt("nanogpt_12.8M", *large))
    out += [
        Workload("makemore_mlp", _makemore_build, _makemore_data, _makemore_loss, _adamw,
                 cfg=dict(vocab=MM_VOCAB, block=MM_BLOCK, embd=MM_EMBD, hidden=MM_HIDDEN,
                          batch=MM_BATCH)),
        Workload("lstm_20_steps", _lstm_build, _lstm_data, _lstm_loss, _adamw,
                 cfg=dict(steps=LSTM_STEPS, batch=LSTM_BATCH, n_in=LSTM_IN,
                          hidden=LSTM_HIDDEN, n_out=LSTM_OUT)),
        Workload("cnn", _cnn_build, _cnn_data, _cnn_loss, _adamw,
                 cfg=dict(batch=CNN_BATCH, image=[1, 28, 28])),
    ]
    return out
