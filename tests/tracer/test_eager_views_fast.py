"""Eager views straight from NumPy (#14, the LSTM step): basic indexing and transposes of a host
tensor without gradient apply no primitive (a read-only NumPy view of the base's memory), with
gradient exactly the primitives they applied before; values, errors, view semantics and
gradients as torch's."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")


KEYS = [3, -1, (1, 2), (slice(None), slice(None, 2)), (0, slice(1, 4, 2)),
        (slice(2, 1),), slice(None), (slice(None), 0, slice(3, None)), (slice(-3, None, 2),)]


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_basic_index_without_grad_is_a_numpy_view(key, applied_primitives):
    a = np.arange(5 * 4 * 6, dtype=np.float32).reshape(5, 4, 6)
    x = tj.tensor(a)
    y = x[key]
    assert applied_primitives == []
    np.testing.assert_array_equal(y.numpy(), a[key])
    assert y.shape == a[key].shape and y.dtype == x.dtype
    if y.numel():
        assert np.shares_memory(y._data, x._data)


def test_transposes_without_grad_are_numpy_views(applied_primitives):
    a = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    x = tj.tensor(a)
    m = tj.tensor(a[0])
    np.testing.assert_array_equal(x.T.numpy(), a.T)
    np.testing.assert_array_equal(x.mT.numpy(), np.swapaxes(a, -1, -2))
    np.testing.assert_array_equal(m.t().numpy(), a[0].T)
    assert applied_primitives == []


def test_int_index_of_a_vector_is_a_0d_tensor():
    x = tj.tensor(np.arange(5.0))
    y = x[2]
    assert y.shape == () and float(y) == 2.0
    x.add_(1.0)                              # the view follows its base
    assert float(y) == 3.0


def test_views_write_through_and_follow():
    x = tj.tensor(np.zeros((3, 4), np.float32))
    row, col, tr = x[1], x[:, 2], x.T
    row.add_(1.0)
    col.mul_(0.0).add_(5.0)
    want = np.zeros((3, 4), np.float32)
    want[1] += 1.0
    want[:, 2] = 5.0
    np.testing.assert_array_equal(x.numpy(), want)
    np.testing.assert_array_equal(row.numpy(), want[1])
    np.testing.assert_array_equal(tr.numpy(), want.T)
    assert row._version == x._version and tr._version == x._version
    x.zero_()
    assert not row.numpy().any() and not tr.numpy().any()


def test_view_arrays_are_read_only_lazy_copies():
    x = tj.tensor(np.ones((2, 3)))
    for v in (x[0], x[:, 1:], x.T):
        assert not v._data.flags.writeable
    y = x[0].clone()
    y.add_(1.0)                              # a copy, not the base's memory
    assert x.numpy()[0, 0] == 1.0


@pytest.mark.parametrize("key, prims", [((slice(None), slice(None, 8)), []),
                                        (1, ["slice", "reshape"]),
                                        ((slice(None),), [])], ids=repr)
def test_basic_index_with_grad_records_the_same_primitives(key, prims, applied_primitives):
    x = tj.tensor(np.ones((4, 32), np.float32), requires_grad=True) * 2.0
    del applied_primitives[:]
    y = x[key]
    assert applied_primitives == prims
    assert y._requires_grad and y.grad_fn is not None


def test_transpose_with_grad_records_one_primitive(applied_primitives):
    w = tj.tensor(np.ones((3, 4), np.float32), requires_grad=True)
    for t, name in ((w.T, "PermuteBackward0"), (w.t(), "TBackward0"), (w.mT, "TransposeBackward0")):
        assert t.grad_fn.name() == name     # (torch's names)
    assert applied_primitives == []        # recorded without dispatch (eager_views._recorded_view)


def test_lstm_gate_slices_gradients_match_torch():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 5)).astype(np.float64)
    w = rng.standard_normal((16, 5)).astype(np.float64)
    xs, ws = tj.tensor(a), tj.tensor(w, requires_grad=True)
    xt, wt = torch.tensor(a), torch.tensor(w, requires_grad=True)
    outs = []
    for lib, x, W in ((tj, xs, ws), (torch, xt, wt)):
        g = x @ W.T
        i, f, c, o = g[:, :4], g[:, 4:8], g[:, 8:12], g[:, 12:]
        y = (lib.sigmoid(i) * lib.tanh(c) + f * o[1] - x[2, :4].sum()).sum()
        y.backward()
        outs.append(float(y.detach()))
    assert outs[0] == pytest.approx(outs[1], rel=1e-12)
    np.testing.assert_allclose(ws.grad.numpy(), wt.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_errors_name_the_index():
    x = tj.tensor(np.ones((3, 4)))
    with pytest.raises(IndexError, match="index 3 is out of bounds for axis 0 with size 3"):
        x[3]
    with pytest.raises(IndexError, match="index -5 is out of bounds for axis 1 with size 4"):
        x[0, -5]
    with pytest.raises(ValueError, match="step must be greater than zero"):
        x[::-1]
    with pytest.raises(IndexError, match="too many indices"):
        x[0, 0, 0]


def test_other_keys_keep_the_general_path():
    a = np.arange(12.0).reshape(3, 4)
    x = tj.tensor(a)
    np.testing.assert_array_equal(x[None, 1].numpy(), a[None, 1])
    np.testing.assert_array_equal(x[..., 1].numpy(), a[..., 1])
    np.testing.assert_array_equal(x[np.int64(1)].numpy(), a[1])
    np.testing.assert_array_equal(x[[0, 2]].numpy(), a[[0, 2]])
    np.testing.assert_array_equal(x[x > 5].numpy(), a[a > 5])


def test_non_contiguous_base_and_empty_and_unit_sizes():
    a = np.arange(30.0).reshape(5, 6)[:, ::2]           # non-contiguous base array
    x = tj.tensor(a)
    np.testing.assert_array_equal(x[1].numpy(), a[1])
    np.testing.assert_array_equal(x.T[2, 1:].numpy(), a.T[2, 1:])
    e = tj.tensor(np.zeros((0, 3)))
    assert e[:, 1].shape == (0,) and e.T.shape == (3, 0)
    one = tj.tensor(np.ones((1, 1)), requires_grad=True)
    y = one[0]
    assert y.shape == (1,)
    y.sum().backward()
    np.testing.assert_array_equal(one.grad.numpy(), [[1.0]])


def test_inside_compile_the_same_values():
    a = np.arange(12.0).reshape(3, 4)

    @tj.compile
    def f(x):
        return x[1] * 2.0 + x.T[2, 0] + x[:, 1:3].sum()
    want = a[1] * 2.0 + a.T[2, 0] + a[:, 1:3].sum()
    np.testing.assert_allclose(f(tj.tensor(a)).numpy(), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_matmul_of_two_matrices(dtype):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((4, 5)) * 3).astype(dtype)
    b = (rng.standard_normal((6, 5)) * 3).astype(dtype)
    got = tj.tensor(a) @ tj.tensor(b).T              # a transposed (non-contiguous) operand
    np.testing.assert_allclose(got.numpy(), a @ b.T, rtol=1e-6)
    assert got.dtype == tj.tensor(a).dtype
    z = tj.tensor(np.ones((0, 3), dtype)) @ tj.tensor(np.ones((3, 1), dtype))
    assert z.shape == (0, 1)
    with pytest.raises(ValueError, match="shapes do not align"):
        tj.tensor(a) @ tj.tensor(b)


@pytest.mark.parametrize("src, shape", [((32,), (4, 32)), ((1, 5), (3, 5)), ((), (2, 3)),
                                        ((3, 1), (0, 3, 4)), ((64, 1), (64, 128)),
                                        ((2,), (2,))], ids=repr)
def test_broadcast_primitive_values(src, shape):
    """Small host results are filled copies, large ones read-only views: NumPy's values."""
    from tracejit.ir.primitives import P, bind
    a = np.arange(int(np.prod(src)), dtype=np.float32).reshape(src)
    x = tj.tensor(a, requires_grad=True)
    y = bind(P.broadcast, x, shape=shape)
    np.testing.assert_array_equal(y.detach().numpy(), np.broadcast_to(a, shape))
    y.sum().backward()
    copies = int(np.prod(shape)) // a.size         # how often each element is read
    np.testing.assert_array_equal(x.grad.numpy(), np.full(src, copies, np.float32))


def test_expanded_view_with_grad_still_refuses_in_place():
    x = tj.tensor(np.ones((1, 4), np.float32), requires_grad=True) * 1.0
    e = x.expand(3, 4)
    with pytest.raises(RuntimeError, match="more than one element"):
        e.add_(1.0)


def test_slice_gradients_are_pads_of_the_right_dtype():
    for dtype in (np.float32, np.float64):
        w = tj.tensor(np.ones((3, 8), dtype), requires_grad=True)
        (w[:, 2:5] * 2.0).sum().backward()
        want = np.zeros((3, 8), dtype)
        want[:, 2:5] = 2.0
        assert w.grad.dtype == w.dtype
        np.testing.assert_array_equal(w.grad.numpy(), want)


def test_device_view_ops_launch_no_kernel(fake_gpu):
    """A reshape, transpose or slice of a device tensor is a view there (the array's own
    methods: np.reshape/np.transpose went through NumPy's function dispatch, which the strict
    fake CuPy counts as a kernel)."""
    import fakecupy
    a = np.arange(24.0).reshape(4, 6)
    x = tj.tensor(a, requires_grad=True).to("cuda")
    for op, want in ((lambda: x.reshape(6, 4), a.reshape(6, 4)), (lambda: x.T, a.T),
                     (lambda: x.permute(1, 0), a.T), (lambda: x[1:3, ::2], a[1:3, ::2])):
        before = fakecupy.COUNTS["kernels"]
        out = op()
        assert fakecupy.COUNTS["kernels"] == before
        np.testing.assert_array_equal(out.detach().cpu().numpy(), want)


def test_structural_impls_on_numpy_scalars():
    """NumPy reductions may hand a VJP rule a scalar (np.float32): the impls still apply."""
    from tracejit.ir.primitives import P
    s = np.float32(2.5)
    assert P.reshape.impl(s, shape=(1, 1)).shape == (1, 1)
    assert np.asarray(P.transpose.impl(s, perm=())).shape == ()
    a = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(P.slice.impl(a, starts=(1, 0), stops=(3, 4), steps=(1, 3)),
                                  a[1:3, 0:4:3])


@pytest.mark.parametrize("op, want", [
    (lambda x: x.chunk(4, 1), lambda a: np.split(a, 4, 1)),
    (lambda x: x.chunk(3, 0), lambda a: np.array_split(a, [2, 4], 0)),
    (lambda x: x.split([1, 5, 2], 1), lambda a: np.split(a, [1, 6], 1)),
    (lambda x: x.unbind(1), lambda a: [a[:, i] for i in range(a.shape[1])]),
    (lambda x: x.unbind(0), lambda a: list(a)),
    (lambda x: (x.narrow(1, 2, 3),), lambda a: [a[:, 2:5]])], ids=range(6))
def test_pieces_without_grad_are_numpy_views(op, want, applied_primitives):
    a = np.arange(5 * 8, dtype=np.float32).reshape(5, 8)
    x = tj.tensor(a)
    got = op(x)
    assert applied_primitives == []
    assert len(got) == len(want(a))
    for g, w in zip(got, want(a)):
        np.testing.assert_array_equal(g.numpy(), w)
        assert np.shares_memory(g._data, x._data)
    x.mul_(2.0)                                     # the pieces follow their base
    for g, w in zip(got, want(a)):
        np.testing.assert_array_equal(g.numpy(), 2 * w)


def test_pieces_with_grad_match_torch():
    a = np.random.default_rng(3).standard_normal((4, 8))
    res = []
    for lib in (tj, torch):
        x = lib.tensor(a, requires_grad=True)
        i, f, g, o = x.chunk(4, 1)
        u = x.unbind(0)
        y = (i * f.sigmoid() + g.tanh() * o).sum() + (u[1] * u[3]).sum()
        y.backward()
        res.append(x.grad.numpy())
    np.testing.assert_allclose(res[0], res[1], rtol=1e-12)


def test_keys_the_shortcut_leaves_to_the_general_path():
    s = tj.tensor(np.float64(2.0))
    with pytest.raises(IndexError, match="index: too many indices"):
        s[:]
    a = np.arange(12.0).reshape(3, 4)
    x = tj.tensor(a)
    np.testing.assert_array_equal(x[np.int64(1):3, :np.int32(2)].numpy(), a[1:3, :2])
    np.testing.assert_array_equal(x[tj.tensor(1):].numpy(), a[1:])


@pytest.mark.parametrize("shape, lo, hi, interior", [((2, 3), (0, 1), (1, 0), (0, 0)),
                                                     ((2, 3), (1, 0), (0, 2), (1, 2)),
                                                     ((0, 3), (1, 1), (0, 0), (0, 0)),
                                                     ((1,), (0,), (0,), (3,))], ids=repr)
def test_pad_and_sum_implementations(shape, lo, hi, interior):
    from tracejit.ir.primitives import P
    a = np.arange(1, int(np.prod(shape)) + 1, dtype=np.float32).reshape(shape)
    got = P.pad.impl(a, lo=lo, hi=hi, interior=interior)
    want = np.zeros([l + h + n + max(n - 1, 0) * i
                     for n, l, h, i in zip(shape, lo, hi, interior)], np.float32)
    want[tuple(slice(l, l + (n - 1) * (i + 1) + 1, i + 1)
               for n, l, i in zip(shape, lo, interior))] = a
    np.testing.assert_array_equal(got, want)
    assert got.dtype == a.dtype
    s = P.sum.impl(got, axes=(0,))
    np.testing.assert_array_equal(s, want.sum(0, dtype=np.float64).astype(np.float32))
    assert s.dtype == np.float32
