"""An in-place change to a tensor whose memory an op's saved operand reads (a broadcast, a
reshape inside 1-D matmul/dot/mv/outer, an einsum's transposes) is an error at backward, as
in PyTorch. Before, the saved read-only view saw the new values and the gradient came out
wrong without a word (tracer/lazy_copies.py)."""
import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as tjF

torch = pytest.importorskip("torch")
import torch.nn.functional as thF  # noqa: E402

_R = np.random.default_rng(0)
A, B, W, M = (_R.standard_normal(s) for s in ((3, 4), (4,), (5, 4), (4, 5)))

CASES = {
    "mul broadcast": (lambda lib, F, t: t[0] * t[1], 1),
    "mul scalar-side": (lambda lib, F, t: (t[0] * 1.0) * t[1], 1),
    "maximum broadcast": (lambda lib, F, t: lib.maximum(t[0], t[1]), 1),
    "where broadcast": (lambda lib, F, t: lib.where(t[1] > 0, t[0] * t[1], t[0]), 1),
    "mul reshape view": (lambda lib, F, t: t[0] * t[1].reshape(1, 4), 1),
    "matmul 1-D": (lambda lib, F, t: t[0] @ t[1], 1),
    "1-D matmul": (lambda lib, F, t: t[1] @ t[0].T, 1),
    "einsum": (lambda lib, F, t: lib.einsum("ij,kj->ik", t[0], t[2]), 2),
    "outer": (lambda lib, F, t: t[0][0].outer(t[1]), 1),
    "dot": (lambda lib, F, t: t[0][0].dot(t[1]), 1),
    "mv": (lambda lib, F, t: t[0].mv(t[1]), 1),
    "softmax of a broadcast mul": (lambda lib, F, t: F.softmax(t[0] * t[1], -1) * t[0], 1),
}


def _run(lib, F, op, k, modify: bool):
    ts = [lib.tensor(A.copy(), requires_grad=True)] + [lib.tensor(a.copy()) for a in (B, W, M)]
    y = op(lib, F, ts)
    if modify:
        with lib.no_grad():
            ts[k].mul_(2.0)
    y.sum().backward()
    return ts[0].grad.numpy()


@pytest.mark.parametrize("name", sorted(CASES))
def test_modified_operand_is_an_error_at_backward(name):
    op, k = CASES[name]
    with pytest.raises(RuntimeError, match="torch.*inplace|modified by an inplace"):
        _run(torch, thF, op, k, True)            # (the oracle raises too)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        _run(tj, tjF, op, k, True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_unmodified_gradients_match_torch(name):
    op, k = CASES[name]
    np.testing.assert_allclose(_run(tj, tjF, op, k, False), _run(torch, thF, op, k, False),
                               rtol=1e-10, atol=1e-12)


COPIES = {
    "flip of a length-1 axis": lambda x: x.flip(0),
    "roll by 0": lambda x: x.roll(0, 0),
    "roll by the length": lambda x: x.roll(1, 0),
    "repeat by ones": lambda x: x.repeat(1, 1),
    "tile by one": lambda x: x.tile(1),
    "repeat_interleave by one": lambda x: x.repeat_interleave(1, 0),
}


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("name", sorted(COPIES))
def test_composites_that_move_nothing_still_return_a_copy(name, grad):
    # torch's results are copies: an in-place op on the result leaves x alone, and one on x
    # leaves the result alone (tracejit returned x's own array, or a view of it)
    op = COPIES[name]
    got = []
    for lib in (tj, torch):
        x = lib.tensor(np.array([[1.0, 2.0, 3.0]]), requires_grad=grad) * 1
        y = op(x)
        y.add_(100.0)
        after_y = x.detach().numpy().copy()
        x.mul_(2.0)
        got.append((after_y, y.detach().numpy().copy(), y.requires_grad))
    np.testing.assert_array_equal(got[0][0], got[1][0])
    np.testing.assert_array_equal(got[0][1], got[1][1])
    assert got[0][2] == got[1][2]


def test_a_composite_result_that_moves_nothing_gets_its_own_gradient_path():
    x = tj.tensor(np.array([[1.0, 2.0, 3.0]]), requires_grad=True)
    y = x.flip(0)
    (y * tj.tensor([[1.0, 2.0, 3.0]])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1.0, 2.0, 3.0]])




def _lazy_reshape(b):
    # the reshape primitive's eager result: a read-only view of b's memory (a lazy copy)
    from tracejit.ir.primitives import P, bind
    e = bind(P.reshape, b, shape=(1, 4))
    assert np.shares_memory(e._data, b._data) and not e._data.flags.writeable
    return e


def test_a_lazy_copy_written_in_place_takes_storage_and_leaves_its_operand_alone():
    x = tj.tensor(A.copy(), requires_grad=True)
    b = tj.tensor(B.copy())
    e = _lazy_reshape(b)
    e.add_(1.0)                         # e takes storage of its own; b is unchanged
    np.testing.assert_array_equal(b.numpy(), B)
    y = x * e
    with tj.no_grad():
        b.mul_(3.0)                     # reaches neither e nor the node that saved e
    np.testing.assert_array_equal(e.numpy(), [B + 1.0])
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.broadcast_to(B + 1.0, (3, 4)))


def test_an_in_place_change_of_the_lazy_copy_itself_is_seen_by_its_savers():
    x = tj.tensor(A.copy(), requires_grad=True)
    b = tj.tensor(B.copy())
    e = _lazy_reshape(b)
    y = x * e
    e.mul_(2.0)
    np.testing.assert_array_equal(b.numpy(), B)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_a_lazy_copy_of_a_lazy_copy_follows_the_first_operand():
    # x * e saves broadcast(e), a lazy copy of e, itself a lazy copy of b
    x = tj.tensor(A.copy(), requires_grad=True)
    b = tj.tensor(B.copy())
    y = x * _lazy_reshape(b)
    with tj.no_grad():
        b.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
