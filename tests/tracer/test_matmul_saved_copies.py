"""An eager batched `a @ b` followed by an in-place write to an operand's storage: backward must
raise exactly where torch's does (torch saves its operands' folds and reshapes, views or copies
by layout) and otherwise give torch's gradients. Eager fuzzer seed 26730 found tracejit raising
"modified by an inplace operation" after `x.transpose(-2, -1) @ w` and a write to x, where torch
had saved a copy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tracejit as tj

LAYOUTS = ("contig", "mT", "batchT", "expand", "slice")


def _operand(lib, arr: np.ndarray, grad: bool, layout: str):
    """(leaf, written tensor M, operand view of M with arr's values in the given layout)."""
    if layout == "mT":
        base = np.ascontiguousarray(np.swapaxes(arr, -1, -2))
    elif layout == "batchT":
        base = np.ascontiguousarray(np.swapaxes(arr, 0, 1))
    elif layout == "expand":
        base = np.ascontiguousarray(arr[(slice(0, 1),) * (arr.ndim - 2)])
    elif layout == "slice":
        base = np.repeat(arr, 2, axis=-1)
    else:
        base = arr.copy()
    leaf = lib.tensor(base, requires_grad=grad)
    m = leaf * 1.0
    if layout == "mT":
        return leaf, m, m.transpose(-1, -2)
    if layout == "batchT":
        return leaf, m, m.transpose(0, 1)
    if layout == "expand":
        return leaf, m, m.expand(*arr.shape)
    if layout == "slice":
        return leaf, m, m[..., ::2]
    return leaf, m, m


def _case(seed: int):
    r = np.random.default_rng(seed)
    while True:
        na, nb = int(r.integers(1, 5)), int(r.integers(1, 5))
        if max(na, nb) >= 3:
            break
    batch = tuple(int(r.choice([1, 2, 3])) for _ in range(max(na, nb) - 2))
    n, k, m = (int(r.choice([0, 1, 2, 3], p=[.05, .25, .35, .35])) for _ in range(3))

    def shape(nd, rows, cols):
        if nd == 1:
            return (rows,)
        own = batch[len(batch) - (nd - 2):] if nd > 2 else ()
        own = tuple(1 if r.random() < 0.25 else s for s in own)
        return own + (rows, cols)
    sa, sb = shape(na, k, k) if na == 1 else shape(na, n, k), shape(nb, k, m)
    if nb == 1:
        sb = (k,)
    lay = []
    for s in (sa, sb):
        ok = ["contig", "slice"] + (["mT"] if len(s) >= 2 else [])
        ok += ["batchT"] if len(s) >= 3 else []
        ok += ["expand"] if len(s) >= 3 and any(v != 1 for v in s[:-2]) else []
        lay.append(str(r.choice(ok)))
    grads = [bool(r.random() < 0.6), bool(r.random() < 0.6)]
    if not any(grads):
        grads[int(r.integers(2))] = True
    write = int(r.integers(0, 3))           # 0: a's storage, 1: b's, 2: both
    arrs = [r.standard_normal(sa), r.standard_normal(sb)]
    if lay[0] == "expand":
        arrs[0] = np.broadcast_to(arrs[0][(slice(0, 1),) * (len(sa) - 2)], sa).copy()
    if lay[1] == "expand":
        arrs[1] = np.broadcast_to(arrs[1][(slice(0, 1),) * (len(sb) - 2)], sb).copy()
    return arrs, lay, grads, write, r


def _run(lib, arrs, lay, grads, write, w, clone_saved=False):
    (la, ma, a), (lb, mb, b) = (_operand(lib, x, g, lo) for x, g, lo in zip(arrs, grads, lay))
    if clone_saved:         # torch saving copies of everything, as a snapshot would
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t):
            out = a @ b
    else:
        out = a @ b
    if write in (0, 2):
        ma.add_(1.0)
    if write in (1, 2):
        mb.add_(1.0)
    try:
        (out * lib.tensor(w)).sum().backward()
    except RuntimeError as e:
        assert "modified by an inplace operation" in str(e), e
        return None
    return [None if t.grad is None else np.asarray(t.grad.detach().numpy()) for t in (la, lb)]


@pytest.mark.parametrize("chunk", range(6))
def test_batched_matmul_saved_operands_as_torch(chunk):
    for seed in range(chunk * 50, chunk * 50 + 50):
        arrs, lay, grads, write, r = _case(seed)
        w = r.standard_normal(np.matmul(arrs[0], arrs[1]).shape)
        got = _run(tj, arrs, lay, grads, write, w)
        want = _run(torch, arrs, lay, grads, write, w)
        what = f"seed {seed}: {arrs[0].shape} {lay[0]} @ {arrs[1].shape} {lay[1]}, " \
               f"grads {grads}, write {write}"
        if want is None and got is not None:
            # tracejit's operand was a snapshot where torch's was the tensor: allowed (as
            # in the eager fuzzer), its gradients then torch's with saved copies
            want = _run(torch, arrs, lay, grads, write, w, clone_saved=True)
        assert (got is None) == (want is None), \
            f"{what}: tracejit {'raised' if got is None else 'ran'}, torch ran"
        if got is not None:
            for g, h in zip(got, want):
                assert (g is None) == (h is None), what
                if g is not None:
                    np.testing.assert_allclose(g, h, rtol=1e-10, atol=1e-12, err_msg=what)


def test_fuzzer_seed_26730_transposed_batch_times_matrix():
    """The minimized fuzzer program: torch's fold of the transposed batch copies it."""
    x0 = np.arange(8.0).reshape(2, 2, 2)
    res = []
    for lib in (tj, torch):
        x = lib.tensor(x0.copy())
        w = lib.tensor(np.eye(2) + 0.5, requires_grad=True)
        xt = x.transpose(-2, -1)
        y = xt @ w
        xt.clamp_(-3.0, 3.0)            # a write through another view of x, after the product
        y.sum().backward()
        res.append(np.asarray(w.grad.detach().numpy()))
    np.testing.assert_array_equal(res[0], res[1])
