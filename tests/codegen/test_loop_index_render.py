"""One translation of loop-IR index expressions (codegen.loops.render_index) under every
renderer: a backend supplies a table of how it writes each node, the walk is shared. Checked by
a table that evaluates integers (the meaning of each node), by the text dump, and by the LLVM and
CUDA renderers' tables writing the same expression, which the host-compiled CUDA emulation and
the LLVM JIT must evaluate to the same numbers."""
from __future__ import annotations

import numpy as np

import tracejit as tj
from tracejit.codegen import loops as L
from tracejit.codegen.cuda_expr import CBody, CEmitter
from tracejit.codegen.expr import EmitterIndexTable
from tracejit.codegen.llvm_expr import Body, Emitter


class _Eval:
    """A table that computes the integer each node stands for (a fourth 'backend')."""

    def __init__(self, env: dict[str, int]) -> None:
        self.env = env
        self.calls: list[str] = []

    def var(self, x):
        self.calls.append(x.name)
        return self.env[x.name]

    def lit(self, x):
        return x.value

    def add(self, x, a, b):
        self.calls.append("+")
        return a + b

    def mul(self, x, a):
        return a * x.k

    def div(self, x, a):
        return a // x.k

    def min(self, x, a, b):
        self.calls.append("min")
        return min(a, b)

    def gathered(self, x):
        raise AssertionError("no gathered index here")


def _expr():
    i, j = L.Var("i"), L.Var("j")
    # min(i*3 + j, 7) + (i + j)/2 : every arithmetic node kind, a shared operand
    return L.Add(L.Min(L.Add(L.Mul(i, 3), j), L.Lit(7)), L.Div(L.Add(i, j), 2))


def test_one_walk_any_table_evaluates_the_expression():
    for i in range(4):
        for j in range(5):
            t = _Eval({"i": i, "j": j})
            assert L.render_index(_expr(), t) == min(i * 3 + j, 7) + (i + j) // 2
    # operands are written before the node that uses them, left to right; a node object the
    # tree holds twice (i and j here) is written once
    t = _Eval({"i": 1, "j": 2})
    L.render_index(_expr(), t)
    assert t.calls == ["i", "j", "+", "min", "+", "+"]


def test_text_dump_spelling():
    assert str(_expr()) == "min(i*3 + j, 7) + (i + j)/2"
    assert L.index_text(L.Mul(L.Add(L.Var("a"), L.Lit(1)), 4), str) == "(a + 1)*4"


def test_deep_index_expression_is_not_recursive():
    # a chain far deeper than Python's recursion limit is still written
    x: L.Ix = L.Var("i")
    for _ in range(5000):
        x = L.Add(x, L.Lit(1))
    assert L.render_index(x, _Eval({"i": 2})) == 5002


def test_llvm_and_cuda_tables_write_the_same_walk():
    env = {"i": "%i", "j": "%j"}
    b = Body()
    llvm = EmitterIndexTable(Emitter(b, {}, {}), env, None)
    out = L.render_index(_expr(), llvm)
    text = "\n".join(b.lines)
    assert "@llvm.smin.i64" in text and "udiv i64" in text and out.startswith("%")

    cb = CBody()
    cuda = EmitterIndexTable(CEmitter(cb, {}, {}, "int"), {"i": "i", "j": "j"}, None)
    cout = L.render_index(_expr(), cuda)
    ctext = "\n".join(cb.lines)
    assert "min(" in ctext and "(int)7" in ctext and cout
    # one instruction (LLVM) or one local (CUDA) per non-folded node, in the same order
    kinds_llvm = [w for ln in b.lines for w in ("mul", "add", "smin", "udiv") if f" {w}" in ln
                  or f"@llvm.{w}" in ln]
    kinds_cuda = []
    for ln in cb.lines:
        kinds_cuda.append("smin" if "min(" in ln else "mul" if "*" in ln else
                          "udiv" if "/" in ln else "add")
    assert kinds_llvm == kinds_cuda


def test_compiled_min_and_gather_indices_agree_with_numpy():
    # Min (window clipping) and Gathered (take) indices through the whole CPU pipeline
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    idx = np.array([3, -1, 0, 2])

    @tj.compile
    def f(x, idx):
        return tj.cumsum(x[idx], 1)

    np.testing.assert_allclose(f(tj.tensor(x), tj.tensor(idx)).numpy(),
                               np.cumsum(x[idx], 1))
