"""Random programs for property tests: a hypothesis strategy producing a function of three
float inputs of shape (3, 4), built from elementwise ops, broadcasts, reductions and shape ops."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import tracejit as tj

UNARY = {
    "exp": lambda a: tj.exp(tj.clip(a, -5.0, 5.0)),
    "log": lambda a: tj.log(tj.abs(a) + 0.5),
    "sin": tj.sin, "cos": tj.cos, "tanh": tj.tanh,
    "sqrt": lambda a: tj.sqrt(tj.abs(a) + 0.1),
    "abs": tj.abs, "neg": lambda a: -a, "sigmoid": tj.sigmoid, "relu": tj.relu,
    "square": lambda a: a * a, "scale": lambda a: a * 1.5 + 0.25,
    "one_mul": lambda a: a * 1.0 + 0.0,            # algebraic simplification fodder
    "transpose2": lambda a: a.T.T,
    "reshape2": lambda a: a.reshape(12).reshape(3, 4),
}
BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (tj.abs(b) + 0.5), "max": tj.maximum, "min": tj.minimum,
    "where": lambda a, b: tj.where(a > b, a, b * 2.0),
    "bcast_row": lambda a, b: a + b.sum(axis=0, keepdims=True),
    "bcast_col": lambda a, b: a * tj.max(b, axis=1, keepdims=True),
    "pow": lambda a, b: (tj.abs(a) + 0.5) ** tj.tanh(b),
}

step = st.one_of(
    st.tuples(st.just("u"), st.sampled_from(sorted(UNARY)), st.integers(0, 20)),
    st.tuples(st.just("b"), st.sampled_from(sorted(BINARY)), st.tuples(st.integers(0, 20),
                                                                       st.integers(0, 20))),
)
programs = st.lists(step, min_size=1, max_size=12)


def build(prog):
    """A function of (x, y, z) running `prog`, returning the last value and a reduction."""
    def f(x, y, z):
        vals = [x, y, z]
        for kind, name, arg in prog:
            if kind == "u":
                vals.append(UNARY[name](vals[arg % len(vals)]))
            else:
                vals.append(BINARY[name](vals[arg[0] % len(vals)], vals[arg[1] % len(vals)]))
        return vals[-1], (vals[-1] * vals[-2]).sum(axis=1)
    return f


def mixed_steps(mix: dict):
    """A strategy of one step over `mix` ({(kind, name): fn}, kind "u" unary or "b" binary):
    the op and two operand indices (taken modulo the values so far)."""
    return st.tuples(st.sampled_from(sorted(mix)), st.integers(0, 30), st.integers(0, 30))


def run_mixed(mix: dict, prog, vals: list) -> list:
    """`vals` with each step's result of `prog` (steps of mixed_steps(mix)) appended."""
    vals = list(vals)
    for (kind, name), i, j in prog:
        a, b = vals[i % len(vals)], vals[j % len(vals)]
        vals.append(mix[kind, name](a) if kind == "u" else mix[kind, name](a, b))
    return vals


def inputs(seed: int, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((3, 4)).astype(dtype) for _ in range(3)]
