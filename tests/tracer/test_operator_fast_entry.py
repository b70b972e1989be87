"""`a + b`, `a - b`, `a * b`, `a / b` (Tensor's operators) go through dispatch.fast_binary: for
two host tensors of one float dtype and one shape it runs the primitive in one frame; every
other case is the general ops.add & co. Both must give torch's values, dtypes, gradients, node
names and errors, whatever operands meet (random dtypes, shapes, weak Python scalars, NumPy
arrays, grad modes, traces)."""
import sys
import warnings

import numpy as np
import pytest

import tracejit as tj
from tracejit.tracer import ops

torch = pytest.importorskip("torch")

OPS = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
       "div": lambda a, b: a / b}
HOT = dict(OPS, matmul=lambda a, b: a @ b.T)
DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_]
SHAPES = [(), (0,), (1,), (3,), (2, 3), (1, 3), (2, 1), (0, 3), (4, 1, 3)]


def _python_calls(fn) -> list:
    """The Python functions fn() enters (C functions aside), in order."""
    names = []

    def prof(frame, event, arg):
        if event == "call":
            names.append(frame.f_code.co_name)
    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return names


@pytest.mark.parametrize("op", list(HOT))
def test_the_hot_case_is_one_frame_and_a_node(op):
    """Two host float tensors of one shape: the operator's frame, the new tensor's and its
    node's; before, ops.<op> -> _binary -> __tj_bind__ -> apply_primitive -> run_impl."""
    a = tj.tensor(np.ones((4, 8), np.float32), requires_grad=True)
    b = tj.tensor(np.full((4, 8), 2.0, np.float32), requires_grad=True)
    keep = HOT[op](a, b)        # the inference cache's entry; the leaves' AccumulateGrad nodes
    calls = [c for c in _python_calls(lambda: HOT[op](a, b)) if c != "<lambda>"]
    assert "apply_primitive" not in calls and "_binary" not in calls, calls
    # the operator, the tensor, the node and its two edges to the leaves' live nodes (and
    # the transpose's own calls)
    n_t = len([c for c in _python_calls(lambda: b.T) if c != "<lambda>"]) if op == "matmul" else 0
    assert len(calls) <= 5 + n_t, calls
    assert keep.grad_fn is not None


def _operand(rng, kind, dtype, shape, requires):
    if kind == "py":
        v = rng.standard_normal() * 3
        # (no Python bool: t - True computes here, where torch refuses it)
        return (int(v) if np.dtype(dtype).kind in "ib" else float(v)), None
    arr = rng.standard_normal(shape) * 3 + 0.5
    arr = (arr > 0.5) if dtype == np.bool_ else arr.astype(dtype)
    if kind == "np":
        return arr, torch.tensor(arr)
    req = requires and np.dtype(dtype).kind == "f"
    if kind == "tcol" and arr.ndim >= 2:          # a non-contiguous operand (a transpose)
        base = np.ascontiguousarray(arr.swapaxes(-1, -2))
        return tj.tensor(base).swapaxes(-1, -2), torch.tensor(base).transpose(-1, -2)
    return tj.tensor(arr, requires_grad=req), torch.tensor(arr, requires_grad=req)


def _leaves(*ts):
    return [t for t in ts if isinstance(t, tj.Tensor) and t.requires_grad and t.is_leaf]


@pytest.mark.parametrize("seed", range(6))
def test_random_operands_match_torch(seed):
    """Operators on random operand kinds, dtypes (one or two), shapes (same or broadcast) and
    grad requirements: values, dtypes, node names and gradients as torch's."""
    rng = np.random.default_rng(seed)
    checked = 0
    for _ in range(120):
        op = rng.choice(list(OPS))
        # (NumPy array operands aside: a 0-d one is weak here, a tensor - bool array computes)
        kinds = [rng.choice(["t", "t", "t", "tcol", "py"]) for _ in range(2)]
        if "t" not in kinds and "tcol" not in kinds:
            kinds[0] = "t"
        da = DTYPES[rng.integers(len(DTYPES))]
        db = da if rng.random() < 0.6 else DTYPES[rng.integers(len(DTYPES))]
        sa = SHAPES[rng.integers(len(SHAPES))]
        sb = sa if rng.random() < 0.6 else SHAPES[rng.integers(len(SHAPES))]
        if da is not db and () in (sa, sb) and sa != sb:
            continue        # (torch's 0-d tensors do not promote a dimensioned one; ours do)
        a, at = _operand(rng, kinds[0], da, sa, rng.random() < 0.7)
        b, bt = _operand(rng, kinds[1], db, sb, rng.random() < 0.7)
        ta = at if at is not None and kinds[0] != "np" else a if at is None else at
        tb = bt if bt is not None and kinds[1] != "np" else b if bt is None else bt
        try:
            want = OPS[op](ta, tb)
        except (RuntimeError, TypeError, ValueError):
            with pytest.raises((RuntimeError, TypeError, ValueError)):
                OPS[op](a, b)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")          # no NumPy warning leaks (inf, nan, 1/0)
            got = OPS[op](a, b)
        assert got.dtype.np == want.detach().numpy().dtype, (op, kinds, da, db, sa, sb)
        np.testing.assert_allclose(got.detach().numpy().astype(np.float64),
                                   want.detach().numpy().astype(np.float64),
                                   rtol=2e-3 if np.float16 in (da, db) else 1e-6, atol=1e-6,
                                   equal_nan=True)
        assert got.requires_grad == want.requires_grad
        if want.requires_grad:
            if "py" not in kinds:       # (torch's t / 2.0 is a MulBackward0)
                assert got.grad_fn.name() == want.grad_fn.name()
            if got.numel():
                g = rng.standard_normal(got.shape).astype(got.dtype.np)
                mine, theirs = _leaves(a, b), [t for t in (at, bt) if t is not None and
                                               t.requires_grad and t.is_leaf]
                got.backward(tj.tensor(g))
                want.backward(torch.tensor(g))
                for m, t in zip(mine, theirs):
                    np.testing.assert_allclose(m.grad.numpy().astype(np.float64),
                                               t.grad.numpy().astype(np.float64),
                                               rtol=2e-2, atol=1e-3)
        checked += 1
    assert checked > 40


def test_float_overflow_and_division_by_zero_are_values_not_warnings():
    a = tj.tensor(np.array([3e38, 1.0, 0.0], np.float32))
    b = tj.tensor(np.array([3e38, 0.0, 0.0], np.float32))
    a + b                           # the inference cache's entry, then the fast entry
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s, q = a + b, a / b
    assert np.isinf(s.numpy()[0])
    assert np.isinf(q.numpy()[1]) and np.isnan(q.numpy()[2])


def test_zero_dim_results_are_arrays():
    """NumPy returns a scalar for two 0-d arrays: the tensor holds a 0-d array."""
    a = tj.tensor(np.float32(2.0), requires_grad=True)
    b = tj.tensor(np.float32(3.0), requires_grad=True)
    for _ in range(2):
        c = a * b
        assert type(c._data) is np.ndarray and c.shape == () and c.dtype is tj.float32
    c.backward()
    assert a.grad.item() == 3.0 and b.grad.item() == 2.0


def test_grad_modes_and_autograd_semantics():
    x = tj.tensor(np.arange(1.0, 7.0).reshape(2, 3), requires_grad=True)
    y = tj.tensor(np.full((2, 3), 0.5), requires_grad=True)
    x * y
    with tj.no_grad():
        assert (x * y).grad_fn is None and not (x * y).requires_grad
    with tj.inference_mode():
        assert not (x + y).requires_grad
    z = x * y
    z.retain_grad()
    seen = []
    z.register_hook(lambda g: seen.append(g.numpy().copy()))
    w = z / y
    w.sum().backward()
    np.testing.assert_allclose(z.grad.numpy(), 1 / y.detach().numpy())
    assert len(seen) == 1
    np.testing.assert_allclose(x.grad.numpy(), np.ones((2, 3)))
    # a saved operand changed in place: the version check still fires
    u = x * y
    with tj.no_grad():
        y.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        u.sum().backward()


def test_create_graph_through_the_operators():
    x = tj.tensor(np.array([1.5, -2.0]), requires_grad=True)
    y = x * x * x
    (g,) = tj.autograd.grad(y.sum(), [x], create_graph=True)
    (gg,) = tj.autograd.grad(g.sum(), [x])
    xv = x.detach().numpy()
    np.testing.assert_allclose(g.detach().numpy(), 3 * xv ** 2)
    np.testing.assert_allclose(gg.numpy(), 6 * xv)


def test_inside_a_compiled_function_the_general_path_traces():
    x = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    y = np.full((2, 3), 2.0, np.float32)

    @tj.compile
    def f(a, b):
        return (a + b) * (a - b) / b

    want = (x + y) * (x - y) / y
    for _ in range(2):
        np.testing.assert_allclose(f(tj.tensor(x), tj.tensor(y)).numpy(), want, rtol=1e-6)


def test_general_function_is_kept():
    """tj.add and Tensor.add keep alpha= (the operators are their fast fronts)."""
    a = tj.tensor(np.ones(3))
    assert tj.Tensor.__add__.__wrapped__ is ops.add
    np.testing.assert_allclose(a.add(a, alpha=3).numpy(), np.full(3, 4.0))
    with pytest.raises(TypeError, match="alpha"):
        tj.add(a, a, alpha="x")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_matmul_of_matrices_matches_torch(dtype):
    """x @ W.T (two 2-D host tensors, one of them a transposed view) through the fast entry,
    repeated so the second call takes it, and the shapes it must leave to ops.matmul."""
    rng = np.random.default_rng(3)
    for sx, sw in [((4, 5), (6, 5)), ((1, 1), (1, 1)), ((0, 3), (2, 3)), ((3, 0), (2, 0)),
                   ((2, 3), (3,)), ((2, 2, 3), (4, 3))]:
        x = rng.standard_normal(sx).astype(dtype)
        w = rng.standard_normal(sw).astype(dtype)
        for _ in range(2):
            a, b = tj.tensor(x, requires_grad=True), tj.tensor(w, requires_grad=True)
            at, bt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
            got, want = a @ b.mT if b.ndim > 1 else a @ b, at @ bt.mT if bt.ndim > 1 else at @ bt
            tol = 1e-2 if dtype == np.float16 else 1e-6
            assert got.dtype.np == want.detach().numpy().dtype and got.shape == tuple(want.shape)
            np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=tol,
                                       atol=tol)
            assert got.grad_fn.name() == want.grad_fn.name()
            g = rng.standard_normal(got.shape).astype(dtype)
            got.backward(tj.tensor(g))
            want.backward(torch.tensor(g))
            np.testing.assert_allclose(a.grad.numpy(), at.grad.numpy(), rtol=tol, atol=tol)
            np.testing.assert_allclose(b.grad.numpy(), bt.grad.numpy(), rtol=tol, atol=tol)


def test_matmul_errors_name_the_op():
    a = tj.tensor(np.ones((2, 3), np.float32))
    b = tj.tensor(np.ones((4, 5), np.float32))
    for _ in range(2):
        with pytest.raises(ValueError, match="matmul"):
            a @ b
