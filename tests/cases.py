"""One table of op cases used by the forward, gradient, transform and backend tests.

Each case: a function on tracejit tensors, the NumPy reference, and input specs
(shape, domain) where domain is "any", "pos" (> 0.1), "int" (small integers) or "bool"."""
from __future__ import annotations

import math

import numpy as np

import tracejit as tj


def _lse(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _ln(x):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


_erf, _erfc = np.vectorize(math.erf), np.vectorize(math.erfc)


S = (3, 4)
CASES = {
    # elementwise unary
    "neg": (lambda x: -x, np.negative, [(S, "any")]),
    "exp": (tj.exp, np.exp, [(S, "any")]),
    "log": (tj.log, np.log, [(S, "pos")]),
    "sin": (tj.sin, np.sin, [(S, "any")]),
    "cos": (tj.cos, np.cos, [(S, "any")]),
    "tanh": (tj.tanh, np.tanh, [(S, "any")]),
    "sqrt": (tj.sqrt, np.sqrt, [(S, "pos")]),
    "abs": (tj.abs, np.abs, [(S, "any")]),
    "sign": (tj.sign, np.sign, [(S, "any")]),
    "cast": (lambda x: tj.cast(x, tj.float32) * 2, lambda x: x.astype(np.float32) * 2,
             [(S, "any")]),
    # binary, with broadcasting
    "add": (lambda a, b: a + b, np.add, [(S, "any"), ((4,), "any")]),
    "sub": (lambda a, b: a - b, np.subtract, [(S, "any"), ((3, 1), "any")]),
    "mul": (lambda a, b: a * b, np.multiply, [(S, "any"), (S, "any")]),
    "div": (lambda a, b: a / b, np.divide, [(S, "any"), (S, "pos")]),
    "rdiv": (lambda x: 2.0 / x, lambda x: 2.0 / x, [(S, "pos")]),     # reciprocal(x) * 2
    "pow": (lambda a, b: a ** b, np.power, [(S, "pos"), (S, "any")]),
    "pow_scalar": (lambda a: a ** 3, lambda a: a ** 3, [(S, "any")]),
    "maximum": (tj.maximum, np.maximum, [(S, "any"), (S, "any")]),
    "minimum": (tj.minimum, np.minimum, [(S, "any"), (S, "any")]),
    "lt": (lambda a, b: tj.where(a < b, a, b), lambda a, b: np.where(a < b, a, b),
           [(S, "any"), (S, "any")]),
    "le": (lambda a, b: tj.where(a <= b, a, 0.0), lambda a, b: np.where(a <= b, a, 0.0),
           [(S, "any"), (S, "any")]),
    "gt": (lambda a, b: tj.where(a > b, a * b, b), lambda a, b: np.where(a > b, a * b, b),
           [(S, "any"), (S, "any")]),
    "ge": (lambda a, b: tj.where(a >= 0, a, b), lambda a, b: np.where(a >= 0, a, b),
           [(S, "any"), (S, "any")]),
    "eq": (lambda a, b: tj.where(a == a, a, b), lambda a, b: np.where(a == a, a, b),
           [(S, "any"), (S, "any")]),
    "ne": (lambda a, b: tj.where(a != b, a, b), lambda a, b: np.where(a != b, a, b),
           [(S, "any"), (S, "any")]),
    "where": (lambda c, a, b: tj.where(c, a, b), np.where, [(S, "bool"), (S, "any"), (S, "any")]),
    # reductions
    "sum": (lambda x: x.sum(axis=1), lambda x: x.sum(1), [(S, "any")]),
    "sum_all": (lambda x: x.sum(), lambda x: x.sum(), [(S, "any")]),
    "sum_keepdims": (lambda x: tj.sum(x, dim=0, keepdim=True), lambda x: x.sum(0, keepdims=True),
                     [(S, "any")]),
    "max": (lambda x: x.max(axis=1), lambda x: x.max(1), [(S, "any")]),
    "min": (lambda x: tj.min(x, axis=(0, 1)), lambda x: x.min(), [(S, "any")]),
    # shape and layout
    "reshape": (lambda x: x.reshape(2, 6) * 1.5, lambda x: x.reshape(2, 6) * 1.5, [(S, "any")]),
    "broadcast": (lambda x: tj.broadcast_to(x, (2, 3, 4)) * 1.0,
                  lambda x: np.broadcast_to(x, (2, 3, 4)) * 1.0, [((3, 1), "any")]),
    "transpose": (lambda x: x.T * 2.0, lambda x: x.T * 2.0, [(S, "any")]),
    "permute": (lambda x: x.permute(2, 0, 1) + 0.5, lambda x: x.transpose(2, 0, 1) + 0.5,
                [((2, 3, 4), "any")]),
    "slice": (lambda x: x[1:, ::2] * 3.0, lambda x: x[1:, ::2] * 3.0, [(S, "any")]),
    "index_int": (lambda x: x[1] * 2.0, lambda x: x[1] * 2.0, [(S, "any")]),
    "pad": (lambda x: tj.pad(x, ((1, 0), (2, 1))), lambda x: np.pad(x, ((1, 0), (2, 1))),
            [(S, "any")]),
    "concatenate": (lambda a, b: tj.concatenate([a, b], axis=1),
                    lambda a, b: np.concatenate([a, b], 1), [(S, "any"), ((3, 2), "any")]),
    "stack": (lambda a, b: tj.stack([a, b], 0), lambda a, b: np.stack([a, b]),
              [(S, "any"), (S, "any")]),
    "gather": (lambda x: x[np.array([2, 0, 2])], lambda x: x[np.array([2, 0, 2])], [(S, "any")]),
    "gather2": (lambda x: x[:, np.array([[1, 3], [0, 0]])],
                lambda x: x[:, np.array([[1, 3], [0, 0]])], [(S, "any")]),
    "gather_multi": (lambda x: x[np.array([0, 2]), np.array([3, 1])],
                     lambda x: x[np.array([0, 2]), np.array([3, 1])], [(S, "any")]),
    "matmul": (lambda a, b: a @ b, np.matmul, [((3, 4), "any"), ((4, 5), "any")]),
    "matmul_batched": (lambda a, b: a @ b, np.matmul, [((2, 3, 4), "any"), ((4, 2), "any")]),
    "matmul_vec": (lambda a, b: a @ b, np.matmul, [((4,), "any"), ((4, 3), "any")]),
    # composites
    "mean": (lambda x: x.mean(axis=0), lambda x: x.mean(0), [(S, "any")]),
    "var": (lambda x: tj.var(x, axis=1), lambda x: x.var(1, ddof=1), [(S, "any")]),
    "sigmoid": (tj.sigmoid, lambda x: 1 / (1 + np.exp(-x)), [(S, "any")]),
    "relu": (tj.relu, lambda x: np.maximum(x, 0), [(S, "any")]),
    "softplus": (tj.softplus, lambda x: np.log1p(np.exp(x)), [(S, "any")]),
    "gelu": (lambda x: tj.gelu(x, approximate="tanh"), _gelu, [(S, "any")]),
    "gelu_exact": (tj.gelu, lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2))), [(S, "any")]),
    "erf": (tj.erf, _erf, [(S, "any")]),
    "erfc": (tj.erfc, _erfc, [(S, "any")]),
    "logsumexp": (lambda x: tj.logsumexp(x, axis=1), lambda x: _lse(x, 1), [(S, "any")]),
    "softmax": (lambda x: tj.softmax(x, -1), _softmax, [(S, "any")]),
    "log_softmax": (lambda x: tj.log_softmax(x, -1), lambda x: np.log(_softmax(x)), [(S, "any")]),
    "layer_norm": (lambda x: tj.layer_norm(x, (4,)), _ln, [(S, "any")]),
    "mse": (tj.mse_loss, lambda a, b: ((a - b) ** 2).mean(), [(S, "any"), (S, "any")]),
    "cross_entropy": (lambda x: tj.cross_entropy(x, np.array([1, 0, 3])),
                      lambda x: -np.log(_softmax(x))[np.arange(3), [1, 0, 3]].mean(),
                      [(S, "any")]),
    "clip": (lambda x: tj.clip(x, -0.5, 0.5), lambda x: np.clip(x, -0.5, 0.5), [(S, "any")]),
}

# cases whose gradient is defined almost everywhere but has kinks near random inputs
NONSMOOTH = {"abs", "sign", "maximum", "minimum", "relu", "clip", "max", "min", "lt", "le", "gt",
             "ge", "eq", "ne", "where"}
# no useful second derivative (piecewise linear)
NO_HESSIAN = NONSMOOTH | {"gather", "gather2", "gather_multi"}


def make_inputs(specs, dtype=np.float64, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for shape, dom in specs:
        if dom == "bool":
            out.append(rng.random(shape) > 0.5)
        elif dom == "pos":
            out.append((rng.random(shape) * 2 + 0.1).astype(dtype))
        else:
            out.append(rng.standard_normal(shape).astype(dtype))
    return out


def float_positions(specs):
    return [i for i, (_, dom) in enumerate(specs) if dom != "bool"]


def bits_sweep(n: int, seed: int) -> np.ndarray:
    """float32 values from random bit patterns (every exponent, denormals, inf, NaN) plus
    exact 16-bit rounding ties."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    ties = (np.float32(1) + np.arange(64, dtype=np.float32) * np.float32(2.0 ** -11))
    special = np.array([np.inf, -np.inf, np.nan, 0, -0.0, 3.4e38], np.float32)
    return np.concatenate([x, ties, -ties, special])
