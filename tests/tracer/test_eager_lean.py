"""The lean eager path (tracer/eager.py, dispatch.py, autograd.py): the cached shape/dtype
inference, the backward that runs VJP rules on arrays, saved values freed by reference counting,
and exceptions from NumPy chained rather than rebuilt."""
import weakref

import numpy as np
import pytest

import tracejit as tj
from tracejit.ir.primitives import P
from tracejit.tracer import backward_nodes
from tracejit.tracer import eager
from tracejit.tracer import tensor as tensor_module


# -- the inference cache --------------------------------------------------------------------
def test_infer_cache_follows_dtype_and_shape_changes():
    eager.infer_cache_clear()
    for dtype in (np.float32, np.float64, np.int32, np.int64, np.float16):
        for shape in ((3,), (2, 3), (), (0, 4)):
            a = (np.arange(int(np.prod(shape))).reshape(shape) % 5 + 1).astype(dtype)
            got = tj.tensor(a) * tj.tensor(a)
            assert got.dtype.np == np.dtype(dtype) and got.shape == shape
            np.testing.assert_array_equal(got.numpy(), a * a)
            c = tj.tensor(a) < tj.tensor(a + 1)
            assert c.dtype.np == np.bool_ and c.shape == shape


def test_infer_cache_keys_on_params():
    a = np.arange(24.0).reshape(2, 3, 4)
    t = tj.tensor(a)
    for axes in ((0,), (1,), (2,), (0, 2), (0, 1, 2)):
        np.testing.assert_array_equal(t.sum(axes).numpy(), a.sum(axes))
    np.testing.assert_array_equal(t.permute(2, 0, 1).numpy(), a.transpose(2, 0, 1))
    np.testing.assert_array_equal(t.permute([1, 2, 0]).numpy(), a.transpose(1, 2, 0))  # a list
    np.testing.assert_array_equal(tj.cast(t, tj.int32).numpy(), a.astype(np.int32))
    np.testing.assert_array_equal(tj.cast(t, "float32").numpy(), a.astype(np.float32))


def test_infer_errors_are_still_raised_each_time():
    a, b = tj.tensor(np.ones(3)), tj.tensor(np.ones(4))
    for _ in range(2):                  # the failure is not cached as a success
        with pytest.raises(ValueError, match="add"):
            tj.tensor(np.ones(3)).__tj_bind__(P.add, (a, b), {})


# -- backward on arrays ---------------------------------------------------------------------
def test_backward_without_create_graph_records_no_nodes(monkeypatch):
    made = []
    real = backward_nodes._new      # (prim_node makes every PrimNode with it)

    def counting(cls):
        node = real(cls)
        if cls is backward_nodes.PrimNode:
            made.append(node)
        return node
    x = tj.tensor(np.linspace(-1, 1, 8), requires_grad=True)
    y = (tj.tanh(x * x) * tj.exp(x) / (x * x + 1)).sum()
    monkeypatch.setattr(backward_nodes, "_new", counting)
    dispatched = []
    real_bind = tensor_module._apply_primitive
    monkeypatch.setattr(tensor_module, "_apply_primitive",
                        lambda *a: dispatched.append(a[0]) or real_bind(*a))
    y.backward(retain_graph=True)
    assert made == [] and dispatched == []     # VJP rules ran on arrays, not through Tensors
    g1 = x.grad.numpy().copy()
    x.grad = None
    (gx,) = tj.autograd.grad(y, x, create_graph=True)   # the recording path still records
    assert made and gx.grad_fn is not None
    np.testing.assert_allclose(gx.detach().numpy(), g1, rtol=1e-12)


def test_array_backward_runs_hooks_and_retain_grad():
    x = tj.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    h = x * x
    h.retain_grad()
    seen = []
    h.register_hook(lambda g: seen.append(g.numpy().copy()) or g * 10)
    x.register_hook(lambda g: seen.append(("leaf", g.numpy().copy())))
    tj.exp(h).sum().backward()
    e = np.exp(np.array([1.0, 4.0, 9.0]))
    np.testing.assert_allclose(seen[0], e)
    assert isinstance(h.grad, tj.Tensor)
    np.testing.assert_allclose(h.grad.numpy(), e * 10)      # retain_grad sees the hooked one
    np.testing.assert_allclose(x.grad.numpy(), e * 10 * 2 * np.array([1.0, 2.0, 3.0]))
    assert seen[1][0] == "leaf"


def test_array_backward_checks_version_counters():
    x = tj.tensor(np.ones(4), requires_grad=True)
    y = x * 2
    z = tj.exp(y)               # ExpBackward0 saves its output
    w = y * y                   # MulBackward0 saves y
    z.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation.*ExpBackward0"):
        z.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.add_(1)
        w.sum().backward()


def test_array_backward_second_time_is_an_error():
    x = tj.tensor(np.ones(3), requires_grad=True)
    y = tj.exp(x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


# -- memory -----------------------------------------------------------------------------------
def test_saved_output_is_freed_by_backward_without_gc(no_gc):
    x = tj.tensor(np.ones(1000), requires_grad=True)
    big = tj.exp(x)                      # ExpBackward0 keeps its output's array
    ref = weakref.ref(big._data)
    loss = (big * 2).sum()
    del big
    assert ref() is not None
    loss.backward()
    assert ref() is None


def test_unused_graph_is_freed_without_gc(no_gc):
    """No reference cycle between an output and its node: dropping the result frees the
    saved values at once (a saved output Tensor whose grad_fn is the node was a cycle)."""
    x = tj.tensor(np.ones(1000), requires_grad=True)
    y = tj.tanh(tj.exp(x))
    ref = weakref.ref(y._data)
    node = weakref.ref(y.grad_fn)
    del y
    assert ref() is None and node() is None


def test_saved_output_unpacks_with_its_node_for_create_graph():
    x = tj.tensor(np.array([0.5, 1.5]), requires_grad=True)
    y = tj.exp(x)
    (g,) = tj.autograd.grad(y.sum(), x, create_graph=True)
    (gg,) = tj.autograd.grad(g.sum(), x)
    np.testing.assert_allclose(gg.numpy(), np.exp([0.5, 1.5]), rtol=1e-12)


# -- errors -----------------------------------------------------------------------------------
class OddError(ValueError):
    """An exception whose constructor takes other arguments than a message."""

    def __init__(self, code: int, where: str) -> None:
        super().__init__(f"odd {code} at {where}")
        self.code = code


def test_impl_exception_is_chained_not_rebuilt(monkeypatch):
    def bad(x):
        raise OddError(7, "impl")
    monkeypatch.setattr(P.neg, "impl", bad)
    with pytest.raises(ValueError, match=r"neg: odd 7 at impl \(at test_eager_lean.py:\d+\)") as e:
        -tj.tensor(np.ones(2))
    assert isinstance(e.value.__cause__, OddError) and e.value.__cause__.code == 7


def test_numpy_warnings_stay_off_and_user_error_state_is_kept():
    with np.errstate(divide="raise", invalid="raise"):
        out = tj.tensor(np.array([1.0, 0.0])) / tj.tensor(np.array([0.0, 0.0]))
        assert np.isinf(out.numpy()[0]) and np.isnan(out.numpy()[1])
        with pytest.raises(FloatingPointError):     # the user's own NumPy code still raises
            np.array([1.0]) / np.array([0.0])


def test_collector_paused_only_during_backward():
    import gc as _gc
    assert _gc.isenabled()
    x = tj.tensor(np.ones(3), requires_grad=True)
    states = []
    x.register_hook(lambda g: states.append(_gc.isenabled()))
    (x * x).sum().backward()
    assert states == [False] and _gc.isenabled()
    y = tj.exp(x).sum()
    y.backward()
    with pytest.raises(RuntimeError):          # an error inside the pass re-enables it too
        y.backward()
    assert _gc.isenabled()
