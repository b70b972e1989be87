"""More ops composed from existing primitives (products and diagonals, stacks and splits,
axis moves, index_select, rot90, nonzero and one-argument where, unsqueeze's range check):
values and gradients against PyTorch, float32/float64, sizes 0 and 1, eagerly and compiled."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
from opcheck import check, rand  # noqa: E402

FLOATS = pytest.mark.parametrize("dtype", [np.float32, np.float64])


# -- products -----------------------------------------------------------------------------------
@FLOATS
@pytest.mark.parametrize("n,m", [(3, 4), (1, 1), (0, 2)])
def test_outer_dot_mv(dtype, n, m):
    a, b, A = rand(n, dtype=dtype), rand(m, dtype=dtype, seed=1), rand(m, n, dtype=dtype)
    check(tj.outer, torch.outer, a, b)
    check(lambda x, y: x.outer(y), lambda x, y: x.outer(y), a, b, strided=True)
    check(tj.dot, torch.dot, a, rand(n, dtype=dtype, seed=2))
    check(tj.mv, torch.mv, A, a, strided=True)


@FLOATS
@pytest.mark.parametrize("beta,alpha", [(1, 1), (0.5, 2.0), (0, 1)])
def test_addmm_baddbmm_addbmm(dtype, beta, alpha):
    m1, m2 = rand(2, 3, dtype=dtype), rand(3, 4, dtype=dtype, seed=1)
    inp = rand(4, dtype=dtype, seed=2)
    if beta == 0:
        inp[1] = np.nan                    # beta=0: input is not read, as torch
    check(lambda i, a, b: tj.addmm(i, a, b, beta=beta, alpha=alpha),
          lambda i, a, b: torch.addmm(i, a, b, beta=beta, alpha=alpha), inp, m1, m2)
    b1, b2 = rand(2, 2, 3, dtype=dtype), rand(2, 3, 4, dtype=dtype, seed=1)
    check(lambda i, a, b: tj.baddbmm(i, a, b, beta=beta, alpha=alpha),
          lambda i, a, b: torch.baddbmm(i, a, b, beta=beta, alpha=alpha),
          rand(2, 2, 4, dtype=dtype, seed=3), b1, b2)
    check(lambda i, a, b: i.addbmm(a, b, beta=beta, alpha=alpha),
          lambda i, a, b: i.addbmm(a, b, beta=beta, alpha=alpha), inp, b1, b2)


@FLOATS
@pytest.mark.parametrize("sa,sb,dims", [((2, 3, 4), (3, 4, 5), 2), ((2, 3), (3, 2), 1),
                                        ((2, 3), (4,), 0), ((3, 4, 2), (4, 3), ([0, 1], [1, 0])),
                                        ((2, 0), (0, 3), 1)])
def test_tensordot(dtype, sa, sb, dims):
    check(lambda a, b: tj.tensordot(a, b, dims), lambda a, b: torch.tensordot(a, b, dims),
          rand(*sa, dtype=dtype), rand(*sb, dtype=dtype, seed=1))


@FLOATS
@pytest.mark.parametrize("sa,sb", [((2, 3), (4, 5)), ((2,), (3, 2)), ((1, 1), (2, 2)),
                                   ((0, 2), (2, 1))])
def test_kron(dtype, sa, sb):
    check(tj.kron, torch.kron, rand(*sa, dtype=dtype), rand(*sb, dtype=dtype, seed=1))


# -- diagonals ----------------------------------------------------------------------------------
@FLOATS
@pytest.mark.parametrize("shape,offset,d1,d2", [((3, 4), 0, 0, 1), ((3, 4), 2, 0, 1),
                                                ((3, 4), -1, 0, 1), ((3, 4), 5, 0, 1),
                                                ((2, 3, 4), 1, -1, 0), ((0, 3), 0, 0, 1),
                                                ((1, 1), 0, 1, 0), ((2, 3, 3), -2, 1, 2)])
def test_diagonal(dtype, shape, offset, d1, d2):
    x = rand(*shape, dtype=dtype)
    check(lambda a: tj.diagonal(a, offset, d1, d2), lambda a: torch.diagonal(a, offset, d1, d2),
          x)
    check(lambda a: a.diagonal(offset, d1, d2), lambda a: a.diagonal(offset, d1, d2), x,
          strided=True)


@FLOATS
@pytest.mark.parametrize("shape,k", [((3,), 0), ((3,), 2), ((3,), -1), ((0,), 1), ((1,), 0),
                                     ((3, 4), 1), ((4, 3), -2)])
def test_diag_and_trace(dtype, shape, k):
    x = rand(*shape, dtype=dtype)
    check(lambda a: tj.diag(a, k), lambda a: torch.diag(a, k), x)
    if len(shape) == 2:
        check(tj.trace, torch.trace, x, strided=True)
    check(lambda a: tj.diag(a, k), lambda a: torch.diag(a, k), np.arange(3))      # int64


# -- stacks and splits --------------------------------------------------------------------------
@FLOATS
@pytest.mark.parametrize("shapes", [[(3,), (2,)], [(2, 3), (2, 1)], [(), ()], [(2, 1, 3), (2, 2, 3)],
                                    [(0,), (2,)]])
def test_hstack_vstack_dstack_column_stack(dtype, shapes):
    xs = [rand(*s, dtype=dtype, seed=i) for i, s in enumerate(shapes)]
    check(lambda *a: tj.hstack(a), lambda *a: torch.hstack(a), *xs)
    same = [rand(*shapes[0], dtype=dtype, seed=i) for i in range(2)]
    check(lambda *a: tj.vstack(list(a)), lambda *a: torch.vstack(list(a)), *same)
    check(lambda *a: tj.dstack(a), lambda *a: torch.dstack(a), *same, strided=True)
    if len(shapes[0]) <= 2 and shapes[0] != (0,):
        check(lambda *a: tj.column_stack(a), lambda *a: torch.column_stack(a), *same)


@pytest.mark.parametrize("shape", [(), (3,), (2, 3), (2, 3, 4)])
def test_atleast(shape):
    x = rand(*shape)
    for name in ("atleast_1d", "atleast_2d", "atleast_3d"):
        check(getattr(tj, name), getattr(torch, name), x)
        check(lambda a, b: getattr(tj, name)(a, b), lambda a, b: getattr(torch, name)(a, b),
              x, rand(2), compiled=False)


@FLOATS
@pytest.mark.parametrize("shape,ios,dim", [((7,), 3, 0), ((5, 4), [1, 3], 0), ((5, 4), [-1, 9], 1),
                                           ((2, 5), 2, -1), ((0, 2), 3, 0), ((3,), [2, 1], 0)])
def test_tensor_split(dtype, shape, ios, dim):
    x = rand(*shape, dtype=dtype)
    check(lambda a: tj.tensor_split(a, ios, dim), lambda a: torch.tensor_split(a, ios, dim), x)
    check(lambda a: a.tensor_split(ios, dim), lambda a: a.tensor_split(ios, dim), x,
          strided=True, compiled=False)


def test_hsplit_vsplit_dsplit():
    x = rand(4, 6, 2)
    for name, arg in (("hsplit", 3), ("vsplit", [1, 3]), ("dsplit", 2), ("hsplit", [2])):
        check(lambda a: getattr(tj, name)(a, arg), lambda a: getattr(torch, name)(a, arg), x)
    check(lambda a: tj.hsplit(a, 2), lambda a: torch.hsplit(a, 2), rand(4))
    with pytest.raises(RuntimeError, match=r"hsplit: attempted to split along dimension 1.*"
                       r"not divisible"):
        tj.hsplit(tj.tensor(x), 4)
    with pytest.raises(RuntimeError, match=r"dsplit: requires a tensor with at least 3"):
        tj.dsplit(tj.tensor(rand(2, 2)), 1)


# -- axis moves and picks -----------------------------------------------------------------------
@FLOATS
@pytest.mark.parametrize("src,dst", [(0, -1), (-1, 0), ((0, 1), (2, 0)), ((), ()), (1, 1)])
def test_movedim(dtype, src, dst):
    x = rand(2, 3, 4, dtype=dtype)
    check(lambda a: tj.movedim(a, src, dst), lambda a: torch.movedim(a, src, dst), x)
    check(lambda a: a.moveaxis(src, dst), lambda a: a.moveaxis(src, dst), x, strided=True)


@FLOATS
@pytest.mark.parametrize("shape,dim,index", [((3, 4), 0, 1), ((3, 4), -1, -1), ((1,), 0, 0),
                                             ((2, 0, 3), 2, 2)])
def test_select(dtype, shape, dim, index):
    x = rand(*shape, dtype=dtype)
    check(lambda a: tj.select(a, dim, index), lambda a: torch.select(a, dim, index), x)
    check(lambda a: a.select(dim, index), lambda a: a.select(dim, index), x, strided=True)


@FLOATS
@pytest.mark.parametrize("shape,dim,index", [((3, 4), 0, [2, 0, 2]), ((3, 4), -1, [3]),
                                             ((3, 4), 1, []), ((5,), 0, 4), ((), 0, [0]),
                                             ((0, 2), 1, [1, 0])])
def test_index_select(dtype, shape, dim, index):
    x, idx = rand(*shape, dtype=dtype), np.array(index, np.int64)
    check(lambda a, i: tj.index_select(a, dim, i), lambda a, i: torch.index_select(a, dim, i),
          x, idx)
    check(lambda a, i: a.index_select(dim, i), lambda a, i: a.index_select(dim, i), x, idx,
          strided=True)


def test_index_select_errors():
    with pytest.raises(IndexError, match=r"index_select: index out of range.*test_ops_extra"):
        tj.index_select(tj.tensor(rand(3, 4)), 0, tj.tensor([3]))
    with pytest.raises(IndexError, match=r"index_select: index must be a 0-d or 1-d integer"):
        tj.index_select(tj.tensor(rand(3, 4)), 0, tj.tensor([1.0]))


@FLOATS
@pytest.mark.parametrize("k,dims", [(1, (0, 1)), (2, (0, 1)), (3, (1, 0)), (-1, (0, 2)),
                                    (4, (0, 1))])
def test_rot90(dtype, k, dims):
    x = rand(2, 3, 4, dtype=dtype)
    check(lambda a: tj.rot90(a, k, dims), lambda a: torch.rot90(a, k, dims), x)


def test_count_nonzero_square_rsqrt():
    x = rand(3, 4)
    x[0, 1] = x[2, 2] = 0.0
    for dim in (None, 0, (0, 1), -1):
        check(lambda a: tj.count_nonzero(a, dim), lambda a: torch.count_nonzero(a, dim), x)
    check(lambda a: a.count_nonzero(), lambda a: a.count_nonzero(), np.arange(5) % 2 == 0)
    check(tj.square, torch.square, x)
    check(tj.square, torch.square, np.arange(5))
    check(tj.rsqrt, torch.rsqrt, np.abs(x) + 0.5)


# -- nonzero, one-argument where, unsqueeze -----------------------------------------------------
@pytest.mark.parametrize("x", [np.array([[0, 1], [1, 1]]), np.array(3.0), np.array(0.0),
                               np.zeros((0, 2)), np.array([True, False, True])])
def test_nonzero_and_one_argument_where(x):
    check(tj.nonzero, torch.nonzero, x, compiled=False)
    check(lambda a: tj.nonzero(a, as_tuple=True), lambda a: torch.nonzero(a, as_tuple=True), x,
          compiled=False)
    check(tj.where, torch.where, x, compiled=False)
    check(lambda a: a.nonzero(), lambda a: a.nonzero(), x, compiled=False)


def test_nonzero_inside_compile_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"one-argument tj.where\(cond\).*use tj.where\(cond, "
                       r"a, b\)"):
        tj.compile(lambda a: tj.where(a))(tj.tensor([0, 1]))
    with pytest.raises(TypeError, match=r"where: takes a condition and both branches"):
        tj.where(tj.tensor([True]), 1.0)


def test_unsqueeze_out_of_range_is_an_error_not_a_wrap():
    x = tj.tensor(rand(2, 3))
    assert x.unsqueeze(-3).shape == (1, 2, 3) and x.unsqueeze(2).shape == (2, 3, 1)
    for d in (3, -4):
        with pytest.raises(IndexError, match=r"unsqueeze: dim .* out of range.*test_ops_extra"):
            x.unsqueeze(d)


# -- gather, take_along_dim, scatter_add, meshgrid, ravel -------------------------------------------
@FLOATS
@pytest.mark.parametrize("shape,dim,ishape", [((3, 4), 1, (3, 2)), ((3, 4), 0, (5, 4)),
                                              ((2, 3, 4), -1, (2, 2, 6)), ((3, 4), 1, (2, 0)),
                                              ((1, 4), 0, (1, 4)), ((), 0, ())])
def test_gather_and_scatter_add(dtype, shape, dim, ishape):
    x = rand(*shape, dtype=dtype)
    n = x.shape[dim] if x.ndim else 1
    idx = np.random.default_rng(3).integers(0, n, ishape)
    check(lambda a, i: tj.gather(a, dim, i), lambda a, i: torch.gather(a, dim, i), x, idx)
    check(lambda a, i: a.gather(dim, i), lambda a, i: a.gather(dim, i), x, idx, strided=True)
    if all(i <= s for i, s in zip(ishape, shape)) or not shape:
        src = rand(*ishape, dtype=dtype, seed=4)
        check(lambda a, i, s: tj.scatter_add(a, dim, i, s),
              lambda a, i, s: torch.scatter_add(a, dim, i, s), x, idx, src)


@FLOATS
@pytest.mark.parametrize("shape,ishape,dim", [((3, 4), (3, 2), 1), ((3, 4), (1, 2), 1),
                                              ((3, 4), (5,), None), ((3, 1), (3, 6), 1)])
def test_take_along_dim(dtype, shape, ishape, dim):
    x = rand(*shape, dtype=dtype)
    n = x.size if dim is None else x.shape[dim]
    idx = np.random.default_rng(5).integers(0, n, ishape)
    check(lambda a, i: tj.take_along_dim(a, i, dim), lambda a, i: torch.take_along_dim(a, i, dim),
          x, idx)


def test_gather_errors():
    x = tj.tensor(rand(3, 4))
    with pytest.raises(RuntimeError, match=r"gather: index \[0, 4\] is out of bounds.*test_ops"):
        tj.gather(x, 1, tj.tensor([[0, 4]]))
    with pytest.raises(RuntimeError, match=r"gather: index .* must have as many dims"):
        tj.gather(x, 1, tj.tensor([0]))


@pytest.mark.parametrize("indexing", ["ij", "xy"])
def test_meshgrid_and_ravel(indexing):
    a, b, c = rand(3), rand(4, seed=1), rand(2, seed=2)
    check(lambda *t: tj.meshgrid(*t, indexing=indexing),
          lambda *t: torch.meshgrid(*t, indexing=indexing), a, b, c)
    check(lambda *t: tj.meshgrid(list(t), indexing=indexing),
          lambda *t: torch.meshgrid(list(t), indexing=indexing), a, b)
    check(tj.ravel, torch.ravel, rand(2, 3), strided=True)


# -- repeat_interleave, cartesian_prod, dist, tril/triu_indices -------------------------------------
@FLOATS
@pytest.mark.parametrize("shape,repeats,dim", [((2, 3), 2, None), ((2, 3), 3, 1), ((2, 3), 0, 0),
                                               ((), 2, None), ((3,), [1, 0, 2], 0),
                                               ((2, 3), [2, 1], -2)])
def test_repeat_interleave(dtype, shape, repeats, dim):
    x = rand(*shape, dtype=dtype)
    reps = (lambda t: t.tensor(repeats)) if isinstance(repeats, list) else (lambda t: repeats)
    check(lambda a: tj.repeat_interleave(a, reps(tj), dim),
          lambda a: torch.repeat_interleave(a, reps(torch), dim), x,
          compiled=not isinstance(repeats, list))
    check(lambda a: a.repeat_interleave(reps(tj), dim),
          lambda a: a.repeat_interleave(reps(torch), dim), x, compiled=False, strided=True)


def test_cartesian_prod_dist_and_triangle_indices():
    check(lambda a, b, c: tj.cartesian_prod(a, b, c), lambda a, b, c: torch.cartesian_prod(a, b, c),
          rand(2), rand(3, seed=1), rand(1, seed=2))
    check(tj.cartesian_prod, torch.cartesian_prod, rand(3))
    for p in (2, 1, 3.5, float("inf")):
        check(lambda a, b: tj.dist(a, b, p), lambda a, b: torch.dist(a, b, p), rand(3, 4),
              rand(4, seed=1))
    for r, c, off in ((4, 3, 0), (3, 5, 1), (0, 2, 0), (4, 4, -2)):
        for name in ("tril_indices", "triu_indices"):
            np.testing.assert_array_equal(getattr(tj, name)(r, c, off).numpy(),
                                          getattr(torch, name)(r, c, off).numpy())
