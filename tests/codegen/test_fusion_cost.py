"""The fusion cost model (tracejit/codegen/fusion_cost.py): a large value read by several
kernels is materialized once when that moves fewer bytes than re-evaluating its expression in
each of them; cheap and small expressions are still recomputed. Pinned plans on small graphs,
values against NumPy, and the transformer case: the layer-norm weight/bias gradient reductions
(`sum axes=[0, 1]`) read a materialized residual stream instead of re-adding it."""
import re

import numpy as np
import pytest

import tracejit as tj
from tracejit.codegen.fusion import plan
from tracejit.ir.core import Aval, Graph
from tracejit.ir.dtypes import f32
from tracejit.ir.interpret import interpret
from tracejit.ir.primitives import P, add, bind, mul, reduce_sum

N, C = 64, 128          # 8192 elements: above the model's small-value threshold


def _inputs(g, k, shape=(N, C)):
    return [g.add_input(Aval(shape, f32)) for _ in range(k)]


def _by_kind(p):
    return [(k.kind, len(k.inputs)) for k in p.kernels]


def _run_plan_values(g):
    """The plan's kernels cover the graph: the LLVM backend agrees with the interpreter."""
    from tracejit.runtime.llvm_backend import LLVMExecutable
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(v.shape).astype(np.float32) for v in g.inputs]
    want = interpret(g, args)
    got = LLVMExecutable(g).run(args)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_long_shared_sum_is_materialized_once():
    """r = a+b+c+d read by three reductions: one loop writes r, each reduction reads only r."""
    g = Graph("shared")
    a, b, c, d = _inputs(g, 4)
    r = add(add(add(a, b), c), d)
    g.outputs = [reduce_sum(r, (0,)), reduce_sum(mul(r, r), (1,)), reduce_sum(bind(P.exp, r), (0,))]
    p = plan(g)
    loops = [k for k in p.kernels if k.kind == "loop"]
    assert len(loops) == 1 and loops[0].outputs == [r]
    reduces = [k for k in p.kernels if k.kind == "reduce"]
    assert len(reduces) == 3 and all(k.inputs == [r] for k in reduces)
    assert len(p.kernels) == 4
    _run_plan_values(g)


def test_cheap_shared_expression_is_recomputed():
    """2*a read by two reductions: reading a in each is cheaper than writing and reading 2*a."""
    g = Graph("cheap")
    (a,) = _inputs(g, 1)
    r = mul(a, a)
    g.outputs = [reduce_sum(r, (0,)), reduce_sum(r, (1,))]
    p = plan(g)
    assert _by_kind(p) == [("reduce", 1), ("reduce", 1)]
    assert all(k.inputs == [a] for k in p.kernels)
    _run_plan_values(g)


def test_small_values_are_left_to_fusion():
    g = Graph("small")
    a, b, c, d = _inputs(g, 4, shape=(8, 8))
    r = add(add(add(a, b), c), d)
    g.outputs = [reduce_sum(r, (0,)), reduce_sum(r, (1,)), reduce_sum(bind(P.exp, r), (0,))]
    p = plan(g)
    assert [k.kind for k in p.kernels] == ["reduce"] * 3
    _run_plan_values(g)


def test_output_read_by_a_reduction_is_read_not_recomputed():
    """y = a+b+c is a graph output (written anyway): the reduction reads y."""
    g = Graph("out")
    a, b, c = _inputs(g, 3)
    y = add(add(a, b), c)
    g.outputs = [y, reduce_sum(y, (0, 1))]
    p = plan(g)
    red = [k for k in p.kernels if k.kind == "reduce"]
    assert len(red) == 1 and red[0].inputs == [y]
    _run_plan_values(g)


def test_residual_chain_materialized_per_layer():
    """A residual chain r_{l+1} = r_l + f(r_l) feeding per-layer reductions (the layer-norm
    statistics) and leading-axis reductions (their weight gradients): no reduction re-adds
    earlier layers."""
    g = Graph("residual")
    layers = 4
    r, *ws = _inputs(g, 1 + layers)
    outs = []
    for w in ws:
        outs.append(reduce_sum(mul(r, r), (1,)))          # a statistic of the stream
        outs.append(reduce_sum(mul(r, w), (0,)))          # a weight-gradient-like reduction
        r = add(r, bind(P.tanh, mul(r, w)))
    g.outputs = outs + [reduce_sum(r, (0, 1))]
    p = plan(g)
    for k in p.kernels:
        if k.kind == "reduce":
            assert len(k.inputs) <= 2, (k.name, len(k.inputs))
    _run_plan_values(g)


# -- the transformer case -----------------------------------------------------------------------
def _nanogpt_kernels(n_layer):
    torch = pytest.importorskip("torch")
    from nanogpt_helpers import torch_twin
    cfg = dict(n_layer=n_layer, n_head=2, n_embd=32, block_size=32, vocab_size=17, dropout=0.0)
    tm, m = torch_twin("nanogpt_fusion_cost", **cfg)
    rng = np.random.default_rng(0)
    idx, tgt = rng.integers(0, 17, (4, 32)), rng.integers(0, 17, (4, 32))
    params = dict(m.named_parameters())

    def loss_grads(idx, tgt):
        _, loss = m(idx, tgt)
        loss.backward()
        return loss, {k: p.grad for k, p in params.items()}
    f = tj.compile(loss_grads)
    loss, grads = f(tj.tensor(idx), tj.tensor(tgt))
    _, tloss = tm(torch.tensor(idx), torch.tensor(tgt))
    tloss.backward()
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-5)
    for k, p in tm.named_parameters():
        np.testing.assert_allclose(grads[k].numpy(), p.grad.numpy(), rtol=2e-3, atol=2e-5)
    return f.lower(tj.tensor(idx), tj.tensor(tgt)).kernels.splitlines()


def test_layer_norm_weight_grads_read_a_materialized_residual_stream():
    lines = _nanogpt_kernels(3)
    lead = [ln for ln in lines if re.search(r": reduce sum axes=\[0, 1\] \[4x32x32\]", ln)]
    assert len(lead) >= 2 * 3 + 2            # ln_1, ln_2 per layer and ln_f: weight and bias
    for ln in lead:
        ops = re.search(r"ops\(([^)]*)\)", ln).group(1).split(",")
        ins = re.search(r" in\(([^)]*)\)", ln).group(1).split(", ")
        # x_hat * g needs the stream, two row statistics and the incoming gradient. The first
        # layer's stream is the embeddings' sum, cheap to re-gather from the small tables (three
        # adds: wte + wpe, the index wrap, eps; one more add and row statistic for the mean's
        # refinement m + mean(x - m)); deeper layers must not re-add earlier layers' outputs per
        # element (before: 2 more adds and 2 more inputs per layer)
        assert ops.count("add") <= 4 and len(ins) <= 8, ln


def test_mask_whose_readers_read_its_input_anyway_is_recomputed():
    """m = a <= 0 (a relu's mask, 1 byte per element) read by three reductions that read `a`
    themselves: recomputing m costs them no bytes, so it is not materialized (a byte count that
    ignored what the readers read anyway wrote the masks of a CNN, 23% slower)."""
    g = Graph("mask")
    (a,) = _inputs(g, 1)
    z = g.add_input(Aval((), f32))
    zb = bind(P.broadcast, z, shape=(N, C))
    m = bind(P.le, a, zb)
    kept = bind(P.where, m, a, zb)
    g.outputs = [reduce_sum(kept, (0,)), reduce_sum(mul(kept, a), (1,)),
                 reduce_sum(bind(P.where, m, zb, a), (0,))]
    p = plan(g)
    assert [k.kind for k in p.kernels] == ["reduce"] * 3
    assert all(set(k.inputs) == {a, z} for k in p.kernels)
    _run_plan_values(g)


def test_output_and_same_shape_loop_stay_one_kernel():
    """An optimizer-style update: m' = a+b+c and p' = d - m' are both outputs of one shape. One
    loop writes both (reading a, b, c, d once); reading m' back in a second kernel would cost a
    kernel and m' twice (a byte count that ignored loop merging split every AdamW update)."""
    g = Graph("update")
    a, b, c, d = _inputs(g, 4)
    m = add(add(a, b), c)
    g.outputs = [m, bind(P.sub, d, m), bind(P.mul, m, m)]
    p = plan(g)
    assert [k.kind for k in p.kernels] == ["loop"] and len(p.kernels[0].outputs) == 3
    _run_plan_values(g)
