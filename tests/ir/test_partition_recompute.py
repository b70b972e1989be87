"""Residuals as a minimum cut (ir/partition.py, autodiff.split(recompute=True)): the backward
recomputes cheap elementwise and view values from fewer saved bytes; gradients are unchanged
(random graphs against eager autograd); the residual report is exactly what a compiled call
with gradients saves."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings, strategies as st

import tracejit as tj
from tracejit.ir.autodiff import split, vjp_graph

from randgraph import BINARY, UNARY, mixed_steps, run_mixed


def _graph(fn, *arrays):
    return tj.compile(fn).lower(*map(tj.tensor, arrays)).graph


def _saved(graph, recompute):
    joint = vjp_graph(graph, list(range(len(graph.inputs))))
    fwd, bwd, n = split(joint, len(graph.inputs), len(graph.outputs), recompute)
    res = fwd.outputs[len(graph.outputs):]
    return res, sum(math.prod(v.shape) * v.dtype.np.itemsize for v in res)


def test_relu_mlp_saves_masks_not_copies():
    # relu(x @ w1) @ w2: the plain split saves the relu output and transposes of the inputs
    # (copies); the cut saves the pre-activation only and recomputes relu and the transposes
    rng = np.random.default_rng(0)
    x, w1, w2 = (rng.standard_normal(s).astype(np.float32) for s in [(8, 16), (16, 32), (32, 4)])
    g = _graph(lambda a, b, c: (tj.relu(a @ b) @ c).sum(), x, w1, w2)
    plain, plain_bytes = _saved(g, False)
    cut, cut_bytes = _saved(g, True)
    assert cut_bytes < plain_bytes
    assert not any(v.producer is not None and v.producer.prim.name == "transpose" for v in cut)
    assert sorted(v.producer.prim.name if v.producer else "input" for v in cut) == \
        ["input", "input", "input", "matmul"]


def test_cut_never_costs_more_than_saving_everything():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 5))
    fns = [lambda a: (tj.exp(a) * tj.sin(a) + a.T.T).sum(),
           lambda a: (tj.softmax(a, axis=1) * a).sum(),
           lambda a: tj.tanh(tj.tanh(a @ a.T) @ a).sum()]
    for fn in fns:
        g = _graph(fn, x)
        assert _saved(g, True)[1] <= _saved(g, False)[1]


MIX = {**{("u", k): v for k, v in UNARY.items()}, **{("b", k): v for k, v in BINARY.items()},
       ("b", "mm"): lambda a, b: (a @ b.T) @ a * 0.1,
       ("u", "soft"): lambda a: tj.softmax(a, axis=1)}
step = mixed_steps(MIX)


def _build(prog):
    def f(x, y, z):
        vals = run_mixed(MIX, prog, [x, y, z])
        return (vals[-1] * vals[len(vals) // 2]).sum() + (vals[-2] ** 2).sum()
    return f


@settings(max_examples=30, deadline=None)
@given(st.lists(step, min_size=1, max_size=10), st.integers(0, 2**31 - 1))
def test_random_graph_gradients_match_eager(prog, seed):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((3, 4)) for _ in range(3)]
    f = _build(prog)
    ts = [tj.tensor(a, requires_grad=True) for a in xs]
    f(*ts).backward()                                  # eager autograd: the oracle
    cs = [tj.tensor(a, requires_grad=True) for a in xs]
    out = tj.compile(f)(*cs)                           # forward + backward executables
    out.backward()
    for t, c in zip(ts, cs):
        want = np.zeros((3, 4)) if t.grad is None else t.grad.numpy()
        got = np.zeros((3, 4)) if c.grad is None else c.grad.numpy()
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_report_is_what_the_call_saves():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((5, 4)), rng.standard_normal((4, 4))

    def f(a, b):
        h = tj.tanh(a @ b)
        return (h * tj.sigmoid(h) @ b.T).sum()
    cf = tj.compile(f)
    xs = [tj.tensor(x, requires_grad=True), tj.tensor(w, requires_grad=True)]
    cf(*xs).backward()
    lo = cf.lower(*xs)
    (wrt, (fwd_exe, _, n_out, _)), = lo._entry.grad_cache.items()
    saved = fwd_exe.graph.outputs[n_out:]
    text = lo.memory
    head = [ln for ln in text.splitlines() if ln.startswith("saved for backward")]
    total = sum(math.prod(v.shape) * v.dtype.np.itemsize for v in saved)
    assert head == [f"saved for backward (gradients of %a, %b): {len(saved)} residuals, "
                    f"{total} B"]
    rows = [ln for ln in text.splitlines() if ln.startswith("  r")]
    assert [ln.split(" ")[3] for ln in rows] == [str(v.aval) for v in saved]


def test_cut_off_saves_what_the_backward_reads(monkeypatch):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((4, 3)), rng.standard_normal((3, 2))
    fn = lambda a, b: (tj.tanh(a @ b) ** 2).sum()    # noqa: E731
    g = _graph(fn, x, w)
    head = lambda: tj.compile(fn).lower(tj.tensor(x), tj.tensor(w)).memory.splitlines()  # noqa
    monkeypatch.setenv("TRACEJIT_RESIDUAL_CUT", "off")
    plain = _saved(g, False)[0]
    assert f"saved for backward (gradients of %a, %b): {len(plain)} residuals" in \
        " ".join(head())
    monkeypatch.setenv("TRACEJIT_RESIDUAL_CUT", "on")
    cut = _saved(g, True)[0]
    assert len(cut) < len(plain)
    assert f"saved for backward (gradients of %a, %b): {len(cut)} residuals" in " ".join(head())
