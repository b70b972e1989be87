"""Fusion's two walks that were quadratic in a deep model, made to stop early, decide exactly as
the full walks did: the shared-expression size check (fusion._expr_exceeds against the length
of fusion._expr_ops' list) and the cost model's bounds (fusion_cost.materialize_by_cost against
the same loop computing every reader kernel's recompute cost), on nanoGPT's value-and-grad
graph and a random-graph sweep of shared expressions."""
from __future__ import annotations

import numpy as np
import pytest

from tracejit.codegen import fusion, fusion_cost as fc
from nanogpt_helpers import lowered_gpt_step


def _gpt_graph(layers: int = 2):
    return lowered_gpt_step(f"fusion_walks_{layers}", layers, n_head=4, n_embd=128,
                            vocab_size=65, batch=8, block_size=64).graph


def _reference_choice(g, hard, uses, fusible, transcendental):
    """materialize_by_cost as it was: every candidate's recompute cost computed in full."""
    outputs = set(g.outputs)
    chosen = []
    for ins in reversed(g.instrs):
        v = ins.out
        if v in hard or not fusible(ins) or v.aval.size < fc.MIN_ELEMENTS or \
                ins.prim.kind == "constant":
            continue
        groups = fc._reader_kernels(fc._readers(v, hard, outputs, uses), fusible)
        if v in outputs:
            groups.pop(("loop", v.shape), None)
        n = len(groups)
        if n == 0 or (n == 1 and v not in outputs):
            continue
        ops, leaves = fc._expr(v, hard)
        size = v.aval.size
        leaf_bytes = {u: min(u.aval.size, size) * u.dtype.np.itemsize for u in leaves}
        flops = fc._flops(ops, transcendental) * size * fc.FLOP_BYTES
        once = sum(leaf_bytes.values()) + flops
        w = float(size * v.dtype.np.itemsize)
        recompute = fc._recompute(v, groups, leaf_bytes, flops, hard)
        cost = n * w if v in outputs else once + w + n * w
        if cost < recompute:
            hard.add(v)
            chosen.append(v)
    return chosen[::-1]


def test_cost_model_bounds_decide_as_the_full_costs(monkeypatch):
    g = _gpt_graph()
    real = fusion.materialize_by_cost
    seen = []

    def both(g, hard, uses, fusible, transcendental):
        ref_hard = set(hard)
        want = _reference_choice(g, ref_hard, uses, fusible, transcendental)
        got = real(g, hard, uses, fusible, transcendental)
        seen.append(len(got))
        assert got == want and hard == ref_hard
        return got
    monkeypatch.setattr(fusion, "materialize_by_cost", both)
    fusion.plan(g)
    assert seen and seen[0] > 0            # the model has values the cost model materializes


def test_shared_expression_size_stops_at_the_limit_with_the_same_answer():
    g = _gpt_graph()
    checked = 0
    uses = g.users()
    stops = {v for v in g.inputs}
    for ins in g.instrs:
        v = ins.out
        if len(uses.get(v, ())) < 2:
            continue
        for limit in (0, 3, fusion.SHARED_EXPR_LIMIT):
            ops = []
            fusion._expr_ops(v, stops, set(), ops, root=True)
            assert fusion._expr_exceeds(v, stops, limit) == (len(ops) > limit)
            checked += 1
        if ins.prim.name == "matmul":
            stops.add(v)                   # some buffers on the way, as fusion has
    assert checked > 100


@pytest.mark.parametrize("seed", range(3))
def test_size_check_on_random_graphs(seed):
    from tracejit.ir import Aval, Graph, P, dtypes as dt
    rng = np.random.default_rng(seed)
    g = Graph("r")
    vals = [g.add_input(Aval((4,), dt.f32)) for _ in range(3)]
    for _ in range(120):
        a, b = (vals[i] for i in rng.integers(0, len(vals), 2))
        vals.append(g.emit(P.get(["add", "mul", "sub"][rng.integers(3)]), [a, b], {}))
    stops = set(g.inputs) | {vals[i] for i in rng.integers(3, len(vals), 10)}
    for v in vals[3:]:
        ops = []
        fusion._expr_ops(v, stops, set(), ops, root=True)
        for limit in (0, 1, 7, 64):
            assert fusion._expr_exceeds(v, stops, limit) == (len(ops) > limit)
