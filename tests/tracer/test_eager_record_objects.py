"""What a recorded eager op leaves for the garbage collector to count (#14): a node keeps the
tensors its rule reads and their versions itself (no SavedTensor object per saved operand),
and an eager view's record keeps its op and key (no closure per view). Fewer tracked objects
per op mean fewer collections, and fewer survivors promoted into the older generations that
a full collection walks. The semantics those objects carried stay: version checks, views
written through and following their base."""
import gc

import numpy as np
import pytest

import tracejit as tj


def _tracked_per_op(make, n_ops: int) -> float:
    keep = []
    make(keep)                  # first-use caches (inference, index plans) outside the count
    keep.clear()
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(n_ops):
        make(keep)
    return (len(gc.get_objects()) - before) / n_ops


def test_a_node_saving_both_operands_adds_no_objects_for_them(no_gc):
    x = tj.tensor(np.linspace(-1, 1, 16).astype(np.float32), requires_grad=True)
    w = tj.tensor(np.linspace(1, 2, 16).astype(np.float32), requires_grad=True)

    def make(keep):
        keep.append(x * w)          # mul saves both operands
    per_op = _tracked_per_op(make, 200)
    # the Tensor, its node, the edges tuple, two edges and the operands' tuple it saves (was
    # 8: a SavedTensor per operand and their tuple; the versions of operands that have no
    # version counter are a shared tuple)
    assert per_op <= 6.5, per_op


def test_gate_slices_and_transposes_keep_no_closure(no_gc):
    g = tj.tensor(np.ones((4, 32), np.float32), requires_grad=True) * 1.0
    w = tj.tensor(np.ones((32, 5), np.float32), requires_grad=True)

    def make(keep):
        keep.append(g[:, 8:16])
        keep.append(w.T)
    per_view = _tracked_per_op(make, 200) / 2
    # the Tensor, its node, its edges, the view record and the base's weak reference to it
    # (was 9.5: a closure per view, its cells and their tuple, and the key it held)
    assert per_view <= 6.5, per_view


def test_saved_operands_are_version_checked_on_both_backward_paths():
    for create_graph in (False, True):
        x = tj.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
        a = x * 1.0
        b = x + 2.0
        y = (a * b).sum()           # MulBackward0 saves a and b
        b.add_(1.0)
        with pytest.raises(RuntimeError, match=r"modified by an inplace operation.*"
                                               r"version 1; expected version 0.*MulBackward0"):
            tj.autograd.grad(y, x, create_graph=create_graph)
    # an operand changed before it was saved is saved at its new version
    x = tj.tensor(np.array([1.0, 2.0]), requires_grad=True)
    a = x * 1.0
    a.mul_(3.0)
    (a * a).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * 9 * np.array([1.0, 2.0]))


def test_views_of_a_view_and_writes_through_still_follow_the_base():
    torch = pytest.importorskip("torch")
    v = np.arange(24.0).reshape(4, 6)
    x, xt = tj.tensor(v, requires_grad=True), torch.tensor(v, requires_grad=True)
    outs = []
    for lib, t in ((tj, x), (torch, xt)):
        base = t * 1.0
        s = base[:, 1:5]
        ss = s[1:, :2]              # a view of a view (composed steps)
        tt = base.T                 # a transpose view of the same base
        ss.mul_(2.0)                # written through to base; s and tt follow
        loss = (s * s).sum() + (tt[0] * 3.0).sum() + (base ** 2).sum()
        loss.backward()
        outs.append((base.detach().numpy().copy(), s.detach().numpy().copy(),
                     tt.detach().numpy().copy(), t.grad.numpy().copy()))
    for a, b in zip(*outs):
        np.testing.assert_allclose(a, b, rtol=1e-12)
