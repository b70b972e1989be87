"""Matmul rewrites before fusion (tracejit/ir/matmul_fold.py): a weight broadcast over a batch
folds the batch into M (one 2-D GEMM), a weight gradient is one GEMM with K = B*T, a transposed
product is a product of transposes; GEMM operands reach BLAS as views, with no kernel that only
writes a transposed copy. Values against the interpreter on the unrewritten graph and NumPy,
including sizes 0 and 1 and non-contiguous arguments; counts of GEMMs and copy kernels."""
import re

import numpy as np
import pytest

import tracejit as tj
from tracejit.ir.core import Aval, Graph
from tracejit.ir.dtypes import f32, f64
from tracejit.ir.interpret import interpret
from tracejit.ir.matmul_fold import fold_matmuls
from tracejit.ir.primitives import P, bind, broadcast, matmul, reduce_sum, swap_last, transpose


def _matmuls(g: Graph) -> list[tuple[int, ...]]:
    return [ins.out.shape for ins in g.instrs if ins.prim.name == "matmul"]


def _check_same(g: Graph, new: Graph, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    args = [rng.standard_normal(v.shape).astype(v.dtype.np) for v in g.inputs]
    for want, got in zip(interpret(g, args), interpret(new, args)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def _linear_graph(batch, m, k, n, transposed=True):
    """x[*batch, m, k] @ broadcast(W.T) as the tracer writes `x @ W.T` for W[n, k]."""
    g = Graph("linear")
    x = g.add_input(Aval(tuple(batch) + (m, k), f64))
    w = g.add_input(Aval((n, k) if transposed else (k, n), f64))
    wt = transpose(w, (1, 0)) if transposed else w
    g.outputs = [bind(P.tanh, matmul(x, broadcast(wt, tuple(batch) + (k, n))))]
    return g


@pytest.mark.parametrize("batch,m,k,n", [((4,), 8, 5, 3), ((2, 3), 4, 6, 2), ((0,), 3, 2, 4),
                                         ((1,), 1, 1, 1), ((3,), 0, 2, 2), ((2,), 3, 0, 2)])
@pytest.mark.parametrize("transposed", [True, False])
def test_broadcast_weight_folds_into_m(batch, m, k, n, transposed):
    g = _linear_graph(batch, m, k, n, transposed)
    new = fold_matmuls(g)
    assert _matmuls(g) == [tuple(batch) + (m, n)]
    assert _matmuls(new) == [(int(np.prod(batch)) * m, n)]          # one 2-D GEMM
    _check_same(g, new)


def test_output_product_keeps_its_batched_gemm():
    """A batched product that is itself a graph output is written in place, not folded and
    copied."""
    g = _linear_graph((3,), 4, 5, 2)
    g.outputs = [g.outputs[0].producer.inputs[0]]
    assert fold_matmuls(g) is g


def test_batched_operands_stay_batched():
    """Attention's q @ k^T: both operands vary with the batch, nothing folds."""
    g = Graph("attn")
    q = g.add_input(Aval((2, 3, 4, 5), f32))
    k = g.add_input(Aval((2, 3, 4, 5), f32))
    g.outputs = [matmul(q, swap_last(k))]
    assert fold_matmuls(g) is g


def test_weight_gradient_is_one_gemm_with_k_bt():
    """sum over the batch of x^T @ g (a broadcast weight's gradient) -> one [K, B*T] @ [B*T, N]."""
    g = Graph("wgrad")
    x = g.add_input(Aval((4, 6, 5), f64))
    gr = g.add_input(Aval((4, 6, 3), f64))
    g.outputs = [reduce_sum(matmul(swap_last(x), gr), (0,))]
    new = fold_matmuls(g)
    assert _matmuls(new) == [(5, 3)]
    assert not any(ins.prim.name == "sum" for ins in new.instrs)
    _check_same(g, new)


def test_weight_gradient_transposed_comes_out_in_weights_layout():
    """transpose(sum_b x^T g) (the gradient of W in x @ W.T) is one GEMM g'^T x', no transpose
    of its result left."""
    g = Graph("wgrad_t")
    x = g.add_input(Aval((2, 3, 4, 5), f64))
    gr = g.add_input(Aval((2, 3, 4, 7), f64))
    g.outputs = [transpose(reduce_sum(matmul(swap_last(x), gr), (0, 1)), (1, 0))]
    new = fold_matmuls(g)
    assert _matmuls(new) == [(7, 5)]
    last = new.outputs[0].producer
    assert last.prim.name == "matmul"
    _check_same(g, new)


def test_partial_batch_sum_is_left_alone():
    g = Graph("partial")
    x = g.add_input(Aval((2, 3, 4, 5), f64))
    gr = g.add_input(Aval((2, 3, 4, 7), f64))
    g.outputs = [reduce_sum(matmul(swap_last(x), gr), (0,))]
    assert _matmuls(fold_matmuls(g)) == [(2, 3, 5, 7)]


def test_matmul_used_twice_is_not_replaced_by_its_sum():
    g = Graph("twice")
    x = g.add_input(Aval((3, 4, 5), f64))
    gr = g.add_input(Aval((3, 4, 2), f64))
    p = matmul(swap_last(x), gr)
    g.outputs = [reduce_sum(p, (0,)), p]
    new = fold_matmuls(g)
    assert (3, 5, 2) in _matmuls(new)
    _check_same(g, new)


# -- end to end: compiled, against NumPy ------------------------------------------------------
def _kernels(fn, *args):
    return fn.lower(*args).kernels.splitlines()


def _gemm_shapes(lines):
    return [m.group(1) for m in (re.search(r": matmul \[([0-9x]+)\]", ln) for ln in lines) if m]


def _copy_kernels(lines):
    """Generated loops that only move data (transpose/reshape/broadcast), nothing computed."""
    out = []
    for ln in lines:
        m = re.search(r": loop \[[0-9x]*\] ops\(([^)]*)\)", ln)
        if m and set(m.group(1).split(",")) <= {"transpose", "reshape", "broadcast"}:
            out.append(ln)
    return out


def _linear_loss(x, w, b):
    return tj.tanh(x @ w.T + b).sum()


@pytest.mark.parametrize("shape", [(4, 16, 8, 5), (2, 1, 1, 1), (0, 3, 4, 2), (3, 0, 4, 2),
                                   (1, 1, 7, 3)])
@pytest.mark.parametrize("contiguous", [True, False])
def test_linear_grads_fold(shape, contiguous):
    bsz, t, c, d = shape
    rng = np.random.default_rng(1)
    x = rng.standard_normal((bsz, t, c)).astype(np.float32)
    if not contiguous:     # a transposed view of a [c, t, b] array
        x = np.ascontiguousarray(x.transpose(2, 1, 0)).transpose(2, 1, 0)
    w = rng.standard_normal((d, c)).astype(np.float32)
    b = rng.standard_normal(d).astype(np.float32)
    g = tj.grad(tj.compile(_linear_loss), argnums=(0, 1, 2))
    dx, dw, db = g(x, w, b)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    y = np.tanh(x64 @ w64.T + b64)
    gy = 1 - y * y
    np.testing.assert_allclose(dx.numpy(), gy @ w64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dw.numpy(), np.einsum("btd,btc->dc", gy, x64), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db.numpy(), gy.sum((0, 1)), rtol=1e-4, atol=1e-4)
    lines = _kernels(g, x, w, b)
    rows = bsz * t
    # forward: one 2-D GEMM; weight gradient: one with K = B*T; the input gradient is a
    # graph output, which its batched GEMM writes in place
    assert sorted(_gemm_shapes(lines)) == sorted([f"{rows}x{d}", f"{bsz}x{t}x{c}", f"{d}x{c}"])
    assert _copy_kernels(lines) == []


def test_nanogpt_block_gemms_are_2d_and_copy_free():
    """A transformer MLP block's forward and backward: every GEMM with a weight is 2-D, and no
    kernel only transposes an operand (before: batched GEMMs over broadcast weights, sums over
    the batch for the weight gradients, transposing loops)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 8, 16)).astype(np.float32)
    w1 = rng.standard_normal((64, 16)).astype(np.float32) * 0.2
    w2 = rng.standard_normal((16, 64)).astype(np.float32) * 0.2

    def block(x, w1, w2):
        h = tj.nn.functional.gelu(x @ w1.T)
        return ((x + h @ w2.T) ** 2).mean()
    g = tj.grad(tj.compile(block), argnums=(0, 1, 2))
    got = g(x, w1, w2)
    import torch
    tx, t1, t2 = (torch.tensor(a, requires_grad=True) for a in (x, w1, w2))
    h = torch.nn.functional.gelu(tx @ t1.T)
    ((tx + h @ t2.T) ** 2).mean().backward()
    for a, t in zip(got, (tx, t1, t2)):
        np.testing.assert_allclose(a.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-6)
    lines = _kernels(g, x, w1, w2)
    shapes = _gemm_shapes(lines)
    assert len(shapes) == 6 and all(s.count("x") == 1 for s in shapes), shapes
    assert _copy_kernels(lines) == []


# -- product_sum: the weight gradient of an unrolled RNN ----------------------------------------
def _rnn_weight_grad_graph(steps, batch, k, n, swapped=True):
    g = Graph("rnn")
    xs = [g.add_input(Aval((batch, k), f64)) for _ in range(steps)]
    gs = [g.add_input(Aval((batch, n), f64)) for _ in range(steps)]
    acc = None
    for x, gr in zip(xs, gs):
        a = swap_last(x) if swapped else bind(P.neg, swap_last(x))
        term = matmul(a, gr)
        acc = term if acc is None else bind(P.add, acc, term)
    g.outputs = [acc]
    return g


@pytest.mark.parametrize("steps,batch,k,n", [(20, 8, 16, 32), (2, 1, 1, 1), (3, 0, 4, 2),
                                             (5, 4, 0, 3)])
@pytest.mark.parametrize("swapped", [True, False])
def test_sum_of_thin_products_is_one_gemm(steps, batch, k, n, swapped):
    g = _rnn_weight_grad_graph(steps, batch, k, n, swapped)
    new = fold_matmuls(g)
    assert len(_matmuls(g)) == steps
    assert _matmuls(new) == [(k, n)]
    assert not any(ins.prim.name == "add" for ins in new.instrs)
    _check_same(g, new)


def test_thick_products_and_shared_terms_are_left_alone():
    g = _rnn_weight_grad_graph(3, 128, 4, 4)            # K = 128 per product: not thin
    assert fold_matmuls(g) is g
    g = _rnn_weight_grad_graph(3, 8, 4, 4)
    g.outputs.append(g.outputs[0].producer.inputs[0])   # a partial sum used elsewhere
    new = fold_matmuls(g)
    assert sorted(_matmuls(new)) == [(4, 4), (4, 4)]     # (m1 + m2) joined, + m3 separate
    _check_same(g, new)


def test_lstm_weight_gradients_are_one_gemm_each():
    """An LSTM cell unrolled over 12 steps: each weight's gradient is one GEMM over all steps
    (K = steps * batch), values against torch."""
    torch = pytest.importorskip("torch")
    steps, batch, n_in, hid = 12, 4, 5, 6
    rng = np.random.default_rng(5)
    x = rng.standard_normal((steps, batch, n_in)).astype(np.float32)
    w_ih = rng.standard_normal((4 * hid, n_in)).astype(np.float32) * 0.3
    w_hh = rng.standard_normal((4 * hid, hid)).astype(np.float32) * 0.3

    def loss(lib, x, w_ih, w_hh):
        h = c = lib.zeros((batch, hid))
        total = 0.0
        for t in range(steps):
            gates = x[t] @ w_ih.T + h @ w_hh.T
            i, f, gg, o = gates.chunk(4, 1)
            c = lib.sigmoid(f) * c + lib.sigmoid(i) * lib.tanh(gg)
            h = lib.sigmoid(o) * lib.tanh(c)
            total = total + (h * h).sum()
        return total
    g = tj.grad(tj.compile(lambda *a: loss(tj, *a)), argnums=(1, 2))
    dw_ih, dw_hh = g(x, w_ih, w_hh)
    tx, t1, t2 = (torch.tensor(a, requires_grad=True) for a in (x, w_ih, w_hh))
    loss(torch, tx, t1, t2).backward()
    np.testing.assert_allclose(dw_ih.numpy(), t1.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dw_hh.numpy(), t2.grad.numpy(), rtol=1e-4, atol=1e-5)
    shapes = _gemm_shapes(_kernels(g, x, w_ih, w_hh))
    assert shapes.count(f"{4 * hid}x{n_in}") == 1 and shapes.count(f"{4 * hid}x{hid}") == 1, shapes
