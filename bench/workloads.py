"""The benchmark workloads: tracejit functions and hand-written NumPy equivalents."""
from __future__ import annotations

import numpy as np

import tracejit as tj

EPS = 1e-5


def w1(x, a, b):
    return tj.tanh(x * a + b) * tj.sigmoid(x) + 0.5 * x * x


def w1_np(x, a, b):
    return np.tanh(x * a + b) * (1 / (1 + np.exp(-x))) + 0.5 * x * x


def w2_loss(x, a, b):
    return w1(x, a, b).sum()


def w2_np(x, a, b):
    t = np.tanh(x * a + b)
    s = 1 / (1 + np.exp(-x))
    dt = (1 - t * t) * s
    return dt * a + t * s * (1 - s) + x, dt * x, dt


def w3_loss(w1_, b1, w2_, b2, x, y):
    h = tj.tanh(x @ w1_ + b1)
    return tj.mse_loss(h @ w2_ + b2, y)


def w3_np(w1_, b1, w2_, b2, x, y):
    h = np.tanh(x @ w1_ + b1)
    out = h @ w2_ + b2
    g = 2 * (out - y) / out.size
    gh = (g @ w2_.T) * (1 - h * h)
    return x.T @ gh, gh.sum(0), h.T @ g, g.sum(0)


def w3_gemms(w1_, b1, w2_, b2, x, y):
    """Only the five GEMMs of W3's step (forward two, backward three): its floor."""
    h = x @ w1_
    g = h @ w2_
    return g @ w2_.T, h.T @ g, x.T @ h


def w4_loss(x):
    h = tj.layer_norm(x)
    return (tj.logsumexp(h, -1) - h[:, 0]).mean()


def w4_np(x):
    n, d = x.shape
    mu = x.mean(1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(1, keepdims=True)
    inv = 1 / np.sqrt(var + EPS)
    h = xc * inv
    m = h.max(1, keepdims=True)
    e = np.exp(h - m)
    gh = e / e.sum(1, keepdims=True) / n
    gh[:, 0] -= 1.0 / n
    return inv * (gh - gh.mean(1, keepdims=True) - h * (gh * h).mean(1, keepdims=True))


def w5(x):
    return x * 2 + 1


def w6_chain(x):
    for i in range(200):
        k = i % 4
        x = tj.sin(x) if k == 0 else x * 1.01 if k == 1 else x + 0.1 if k == 2 else tj.tanh(x)
    return x


def inputs(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)      # noqa: E731
    n = 4_194_304
    return {
        "w1": (f(n), f(n), f(n)),
        "w3": (f(1024, 1024) * 0.03, np.zeros(1024, np.float32), f(1024, 256) * 0.03,
               np.zeros(256, np.float32), f(512, 1024), f(512, 256)),
        "w4": (f(4096, 1024),),
        "w5": (np.arange(8, dtype=np.float32),),
        "w6": (f(1024),),
    }
