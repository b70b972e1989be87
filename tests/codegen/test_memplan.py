"""The memory plan (codegen/memplan.py): intermediates whose lives do not overlap share memory,
and no two buffers live at once ever share a byte; compiled results with the plan sharing
memory equal the reference interpreter's on random graphs."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

import tracejit as tj
from tracejit.codegen.memplan import ALIGN, plan_memory

from randgraph import BINARY, UNARY, mixed_steps, run_mixed


def _check_plan(sizes, steps, mp):
    assert mp.overlapping_pairs() == []
    for k, off in mp.offsets.items():
        assert off % ALIGN == 0
        assert off + mp.sizes[k] <= mp.arena_bytes
    # the peak is at least what is live at the busiest step
    for i in range(len(steps)):
        live = sum(-(-sizes[k] // ALIGN) * ALIGN for k in sizes
                   if mp.lives[k][0] <= i <= mp.lives[k][1])
        assert mp.arena_bytes >= live


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 11), st.integers(0, 4)),
                min_size=1, max_size=25))
def test_random_lifetimes_never_alias(bufs):
    sizes = {f"b{i}": n for i, (n, _, _) in enumerate(bufs)}
    steps: list[list[str]] = [[] for _ in range(16)]
    for i, (_, start, length) in enumerate(bufs):
        steps[start].append(f"b{i}")
        steps[start + length].append(f"b{i}")
    mp = plan_memory(sizes, steps, share=True)
    _check_plan(sizes, steps, mp)
    off = plan_memory(sizes, steps, share=False)
    assert off.overlapping_pairs() == [] and mp.arena_bytes <= off.arena_bytes


def test_chain_shares_and_same_step_does_not():
    # a -> b -> c -> d, each read by the next only: a and c can share, b and d can share
    sizes = {"a": 1000, "b": 1000, "c": 1000, "d": 1000}
    steps = [["a"], ["a", "b"], ["b", "c"], ["c", "d"], ["d"]]
    mp = plan_memory(sizes, steps, share=True)
    assert mp.offsets["a"] == mp.offsets["c"] and mp.offsets["b"] == mp.offsets["d"]
    assert mp.offsets["a"] != mp.offsets["b"]
    assert mp.arena_bytes == 2 * 1024 and mp.separate_bytes == 4 * 1024
    # a buffer last read by the step that writes another never shares with it
    mp = plan_memory({"x": 64, "y": 64}, [["x"], ["x", "y"]], share=True)
    assert mp.offsets["x"] != mp.offsets["y"]


def test_zero_size_buffers():
    mp = plan_memory({"e": 0, "f": 8}, [["e", "f"]], share=True)
    assert mp.arena_bytes == ALIGN and mp.overlapping_pairs() == []


# -- random compiled graphs: many intermediates (matmuls materialize their operands) ---------
MIX = {**{("u", k): v for k, v in UNARY.items()}, **{("b", k): v for k, v in BINARY.items()},
       ("b", "mm"): lambda a, b: (a @ b.T) @ a * 0.1,
       ("b", "rowsoft"): lambda a, b: tj.softmax(a, axis=1) * b}
step = mixed_steps(MIX)


def _build(prog):
    def f(x, y, z):
        vals = run_mixed(MIX, prog, [x, y, z])
        return vals[-1], (vals[-1] * vals[len(vals) // 2]).sum(axis=1), vals[-2] @ vals[-3].T
    return f


@settings(max_examples=40, deadline=None)
@given(st.lists(step, min_size=2, max_size=14), st.integers(0, 2**31 - 1))
def test_random_graphs_match_interpreter(prog, seed):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((3, 4)) for _ in range(3)]
    f = _build(prog)
    got = tj.compile(f)(*map(tj.tensor, xs))
    want = tj.compile(f, backend="interpreter")(*map(tj.tensor, xs))
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g.numpy()), np.asarray(w.numpy()),
                                   rtol=1e-9, atol=1e-9)
    # the executable's plan itself never aliases two live buffers
    exe = tj.compile(f).lower(*map(tj.tensor, xs))._entry.exe
    assert exe.program.memory.overlapping_pairs() == []


def test_compiled_graph_shares_scratch():
    x = np.random.default_rng(0).standard_normal((64, 64))

    def f(a):
        for _ in range(6):
            a = tj.tanh(a @ a) * 0.5
        return a.sum()

    lo = tj.compile(f).lower(tj.tensor(x))
    mp = lo._entry.exe.program.memory
    assert mp.overlapping_pairs() == []
    assert mp.arena_bytes < mp.separate_bytes / 2
    want = x
    for _ in range(6):
        want = np.tanh(want @ want) * 0.5
    np.testing.assert_allclose(tj.compile(f)(tj.tensor(x)).numpy(), want.sum(), rtol=1e-12)


def test_memory_plan_off_matches(monkeypatch):
    monkeypatch.setenv("TRACEJIT_MEMORY_PLAN", "off")
    x = np.random.default_rng(1).standard_normal((16, 16))

    def g(a):
        b = tj.exp(a @ a * 0.01)
        return (b @ b).sum()

    lo = tj.compile(g).lower(tj.tensor(x))
    mp = lo._entry.exe.program.memory
    assert not mp.shared and mp.arena_bytes == mp.separate_bytes
    b = np.exp(x @ x * 0.01)
    np.testing.assert_allclose(tj.compile(g)(tj.tensor(x)).numpy(), (b @ b).sum(), rtol=1e-12)
