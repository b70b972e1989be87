"""matmul_fold's shared_transpose rule: a GEMM operand transpose(x, P) that moves batch axes and
x's last axis (attention's k.transpose(-2, -1) of k = x.view(B, T, h, d).transpose(1, 2), which
the optimizer folds into one permutation) is a swap of transpose(x, Q) when the graph already
has that layout (Q = P with its last two axes swapped, keeping x's last axis last), so one
kernel writes one layout and BLAS gets the other as a transpose flag. Values against the
interpreter on the unrewritten graph, NumPy and torch; sizes 0 and 1."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.ir.core import Aval, Graph
from tracejit.ir.dtypes import f64
from tracejit.ir.interpret import interpret
from tracejit.ir.matmul_fold import fold_matmuls
from tracejit.ir.primitives import P, bind, matmul, transpose


def _perms(g: Graph) -> list[tuple]:
    return [tuple(ins.params["perm"]) for ins in g.instrs if ins.prim.name == "transpose"]


def _attention_graph(b, t, h, d, with_k_layout=True):
    g = Graph("attn")
    x = g.add_input(Aval((b, t, h, d), f64))
    y = g.add_input(Aval((b, t, h, d), f64))
    q = transpose(y, (0, 2, 1, 3))
    kt = transpose(x, (0, 2, 3, 1))                   # k.transpose(1, 2).transpose(-2, -1)
    s = matmul(q, kt)                                 # [b, h, t, t]
    outs = [bind(P.tanh, s)]
    if with_k_layout:
        k = transpose(x, (0, 2, 1, 3))                # k itself, as the backward reads it
        outs.append(matmul(s, k))
    g.outputs = outs
    return g


def _check_same(g: Graph, new: Graph, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    args = [rng.standard_normal(v.shape) for v in g.inputs]
    for want, got in zip(interpret(g, args), interpret(new, args)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 8, 3, 4), (1, 1, 1, 1), (2, 0, 3, 4), (1, 5, 2, 1)])
def test_transposed_key_becomes_a_swap_of_the_kept_layout(shape):
    g = _attention_graph(*shape)
    new = fold_matmuls(g)
    assert (0, 2, 3, 1) in _perms(g)
    assert (0, 2, 3, 1) not in _perms(new)            # no kernel writes the k^T layout
    assert _perms(new).count((0, 2, 1, 3)) == 2       # q and k, k once
    assert (0, 1, 3, 2) in _perms(new)                # the flag
    _check_same(g, new)


def test_left_alone_without_the_other_layout_and_kept_layout_shared():
    g = _attention_graph(2, 8, 3, 4, with_k_layout=False)
    assert fold_matmuls(g) is g                       # nothing to share
    g2 = Graph("self_scores")                         # x @ x^T per head: one layout kept
    x = g2.add_input(Aval((2, 8, 3, 4), f64))
    a = transpose(x, (0, 2, 1, 3))                    # keeps x's last axis last: not rewritten
    g2.outputs = [matmul(a, transpose(x, (0, 2, 3, 1)))]
    new = fold_matmuls(g2)
    assert _perms(new).count((0, 2, 1, 3)) == 1 and (0, 2, 3, 1) not in _perms(new)
    _check_same(g2, new)


def test_attention_step_compiled_matches_torch_and_writes_k_once():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    bsz, t, c, h = 2, 16, 24, 3
    x = rng.standard_normal((bsz, t, c))
    w = rng.standard_normal((c, 3 * c)) * 0.3

    def loss(w, x):
        q, k, v = (x @ w).split(c, dim=2)
        q = q.view(bsz, t, h, c // h).transpose(1, 2)
        k = k.view(bsz, t, h, c // h).transpose(1, 2)
        v = v.view(bsz, t, h, c // h).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / (c // h) ** 0.5)
        y = att.softmax(dim=-1) @ v
        return y.transpose(1, 2).reshape(bsz, t, c).tanh().sum()
    f = tj.compile(tj.value_and_grad(loss))
    kernels = f.lower(w, x).kernels
    val, g = f(w, x)
    tw = torch.tensor(w, requires_grad=True)
    ref = loss(tw, torch.tensor(x))
    ref.backward()
    np.testing.assert_allclose(val.item(), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(g.numpy(), tw.grad.numpy(), rtol=1e-10, atol=1e-12)
    # the split's loop kernels write no [b, h, d, t] layout
    assert f"[{bsz}x{h}x{c // h}x{t}]" not in "".join(
        ln for ln in kernels.splitlines() if ": loop " in ln)
