"""The ops composed from existing primitives that PyTorch code uses (masked_fill, split/chunk,
tril/triu, einsum, one_hot, eye, std, norm, repeat/tile, flip, roll, bmm, new_*, type_as,
t, *_as): values and gradients against PyTorch, float32 and float64, sizes 0 and 1,
negative dims and non-contiguous inputs, eagerly and compiled (forward, and the compiled
backward inside eager autograd)."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
from opcheck import check, rand  # noqa: E402

FLOATS = pytest.mark.parametrize("dtype", [np.float32, np.float64])


# -- masked_fill --------------------------------------------------------------------------------
@FLOATS
@pytest.mark.parametrize("shape,mshape", [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 3), (4, 1)),
                                          ((0, 3), (3,)), ((1,), (1,)), ((), ())])
def test_masked_fill(dtype, shape, mshape):
    x = rand(*shape, dtype=dtype)
    m = np.random.default_rng(2).random(mshape) > 0.5
    check(lambda a, b: a.masked_fill(b, -1.5), lambda a, b: a.masked_fill(b, -1.5), x, m)
    check(lambda a, b: tj.masked_fill(a, b, float("-inf")),
          lambda a, b: torch.masked_fill(a, b, float("-inf")), x, m, strided=True)


@FLOATS
def test_masked_fill_tensor_value_gets_the_gradient(dtype):
    x, m, v = rand(3, 4, dtype=dtype), rand(3, 4) > 0, np.array(2.5, dtype)
    check(lambda a, b, c: a.masked_fill(b, c), lambda a, b, c: a.masked_fill(b, c), x, m, v)


def test_masked_fill_int_and_bool_inputs_keep_their_dtype():
    x, m = np.arange(6).reshape(2, 3), np.array([True, False, True])
    check(lambda a, b: a.masked_fill(b, 2.7), lambda a, b: a.masked_fill(b, 2.7), x, m)
    xb = np.array([[True, False, True]])
    check(lambda a, b: a.masked_fill(b, False), lambda a, b: a.masked_fill(b, False), xb, m)


def test_masked_fill_causal_attention_pattern():
    """nanoGPT: att.masked_fill(bias[:, :, :T, :T] == 0, float('-inf')) then softmax."""
    att = rand(2, 3, 5, 5)
    bias = np.tril(np.ones((8, 8))).reshape(1, 1, 8, 8)
    check(lambda a, b: tj.softmax(a.masked_fill(b[:, :, :5, :5] == 0, float("-inf")), -1),
          lambda a, b: torch.softmax(a.masked_fill(b[:, :, :5, :5] == 0, float("-inf")), -1),
          att, bias)


def test_masked_fill_in_place():
    x = rand(3, 4)
    m = x > 0
    a, b = tj.tensor(x), torch.tensor(x)
    assert a.masked_fill_(tj.tensor(m), 0.0) is a
    b.masked_fill_(torch.tensor(m), 0.0)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    # with a gradient through the in-place update, as torch
    w = tj.tensor(x, requires_grad=True)
    y = w * 2
    y.masked_fill_(tj.tensor(m), 1.0)
    y.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), np.where(m, 0.0, 2.0))

    @tj.compile
    def f(x, m):
        y = x * 1
        y.masked_fill_(m, 7.0)
        return y
    np.testing.assert_array_equal(f(x, m).numpy(), np.where(m, 7.0, x))


def test_masked_fill_errors_name_the_op_and_the_line():
    x = tj.tensor(rand(3, 4))
    with pytest.raises(RuntimeError, match=r"masked_fill.*boolean masks.*test_ops_more.py"):
        x.masked_fill(tj.tensor([1, 0, 1, 0]), 0.0)
    with pytest.raises(RuntimeError, match=r"masked_fill.*0-dimensional.*test_ops_more.py"):
        x.masked_fill(x > 0, tj.tensor([1.0, 2.0]))
    with pytest.raises(RuntimeError, match=r"masked_fill.*does not broadcast"):
        x.masked_fill(tj.tensor(np.ones(3, bool)), 0.0)
    with pytest.raises(RuntimeError, match=r"masked_fill_"):
        tj.tensor(rand(4)).masked_fill_(tj.tensor(np.ones((3, 4), bool)), 0.0)


# -- split, chunk, unbind, narrow ---------------------------------------------------------------
@FLOATS
@pytest.mark.parametrize("shape,size,dim", [((7, 3), 3, 0), ((7, 3), [2, 0, 5], 0),
                                            ((2, 5), 2, -1), ((2, 5), 5, 1), ((4, 0), 2, 1),
                                            ((0, 3), 2, 0), ((1,), 1, 0), ((3, 4), [4], -1)])
def test_split(dtype, shape, size, dim):
    x = rand(*shape, dtype=dtype)
    check(lambda a: a.split(size, dim), lambda a: a.split(size, dim), x)
    check(lambda a: tj.split(a, size, dim=dim), lambda a: torch.split(a, size, dim=dim), x,
          strided=True, compiled=False)


@FLOATS
@pytest.mark.parametrize("shape,chunks,dim", [((5,), 3, 0), ((6, 2), 4, 0), ((2, 5), 2, -1),
                                              ((0,), 3, 0), ((2, 0), 2, 1), ((1, 3), 5, 0),
                                              ((3, 12), 3, 1)])
def test_chunk(dtype, shape, chunks, dim):
    x = rand(*shape, dtype=dtype)
    check(lambda a: a.chunk(chunks, dim), lambda a: a.chunk(chunks, dim), x)
    check(lambda a: tj.chunk(a, chunks, dim), lambda a: torch.chunk(a, chunks, dim), x,
          strided=True, compiled=False)


def test_qkv_split_as_nanogpt():
    x = rand(2, 5, 12)
    check(lambda a: [t.reshape(2, 5, 2, 2).transpose(1, 2) for t in a.split(4, dim=2)],
          lambda a: [t.view(2, 5, 2, 2).transpose(1, 2) for t in a.split(4, dim=2)], x)


@FLOATS
def test_unbind_and_narrow(dtype):
    x = rand(3, 4, dtype=dtype)
    check(lambda a: a.unbind(-1), lambda a: a.unbind(-1), x)
    check(lambda a: tj.unbind(a), lambda a: torch.unbind(a), x, strided=True)
    check(lambda a: a.narrow(1, -3, 2), lambda a: a.narrow(1, -3, 2), x)


def test_split_chunk_errors():
    x = tj.tensor(rand(5, 2))
    with pytest.raises(RuntimeError, match=r"split.*sum to 5.*test_ops_more.py"):
        x.split([2, 2])
    with pytest.raises(RuntimeError, match=r"split_size must be positive"):
        x.split(0)
    with pytest.raises(IndexError, match=r"split: axis 2 is out of range"):
        x.split(1, 2)
    with pytest.raises(RuntimeError, match=r"chunk: chunks must be a positive"):
        x.chunk(0)
    with pytest.raises(RuntimeError, match=r"split: expects at least a 1-dimensional"):
        tj.tensor(1.0).split(1)


# -- tril, triu ---------------------------------------------------------------------------------
@FLOATS
@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (5, 3), (2, 3, 4), (0, 3), (1, 1), (2, 0, 2)])
@pytest.mark.parametrize("diagonal", [0, 1, -1, -7, 9])
def test_tril_triu(dtype, shape, diagonal):
    x = rand(*shape, dtype=dtype)
    check(lambda a: tj.tril(a, diagonal), lambda a: torch.tril(a, diagonal), x)
    check(lambda a: a.triu(diagonal), lambda a: a.triu(diagonal), x, strided=True)


def test_tril_of_int_and_bool_and_in_place():
    check(lambda a: a.tril(), lambda a: a.tril(), np.arange(12).reshape(3, 4))
    check(lambda a: tj.triu(a, 1), lambda a: torch.triu(a, 1), np.ones((3, 3), bool))
    a, b = tj.tensor(rand(3, 3)), torch.tensor(rand(3, 3))
    assert a.tril_(-1) is a
    b.tril_(-1)
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_tril_mask_is_not_a_constant_in_the_graph():
    text = tj.compile(lambda a: tj.tril(a)).lower(rand(64, 64)).as_text()
    assert "iota" in text
    assert not [line for line in text.splitlines() if "constant" in line and "64,64" in line]


def test_tril_errors():
    with pytest.raises(RuntimeError, match=r"tril: input tensor must have at least 2 dim"):
        tj.tril(tj.tensor([1.0, 2.0]))


# -- einsum -------------------------------------------------------------------------------------
EINSUM_CASES = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
    ("ii->i", [(4, 4)]),
    ("ii", [(4, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("i,i->", [(5,), (5,)]),
    ("ij->ji", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("ij", [(3, 4)]),
    ("ba", [(3, 4)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (4, 5)]),
    ("b...i,b...i->b...", [(2, 3, 4), (2, 3, 4)]),
    ("...ij->...ji", [(2, 3, 4)]),
    ("...i,...i", [(2, 1, 3), (4, 3)]),
    ("i...->...", [(3, 2, 2)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ("ijk,ikl->ijl", [(2, 0, 3), (2, 3, 4)]),
    ("ij,jk->ik", [(3, 0), (0, 2)]),
    ("iij->ij", [(3, 3, 2)]),
    ("iii->i", [(2, 2, 2)]),
    ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),
    ("i,i->i", [(1,), (3,)]),
    ("ij,j->i", [(3, 1), (4,)]),
    ("ab,cd->abcd", [(2, 1), (1, 3)]),
    ("Ab,bC->AC", [(2, 3), (3, 2)]),
]


@FLOATS
@pytest.mark.parametrize("eq,shapes", EINSUM_CASES, ids=[c[0] for c in EINSUM_CASES])
def test_einsum(dtype, eq, shapes):
    xs = [rand(*s, dtype=dtype, seed=i) for i, s in enumerate(shapes)]
    check(lambda *a: tj.einsum(eq, *a), lambda *a: torch.einsum(eq, *a), *xs)
    check(lambda *a: tj.einsum(eq, list(a)), lambda *a: torch.einsum(eq, list(a)), *xs,
          strided=True, compiled=False)


def test_einsum_int_and_sublist_forms():
    a, b = np.arange(6).reshape(2, 3), np.arange(12).reshape(3, 4)
    check(lambda x, y: tj.einsum("ij,jk->ik", x, y), lambda x, y: torch.einsum("ij,jk->ik", x, y),
          a, b)
    check(lambda x, y: tj.einsum(x, [0, 1], y, [1, 2], [0, 2]),
          lambda x, y: torch.einsum(x, [0, 1], y, [1, 2], [0, 2]), rand(2, 3), rand(3, 4))


def test_einsum_lowers_to_a_matmul():
    text = tj.compile(lambda a, b: tj.einsum("bhqd,bhkd->bhqk", a, b)).lower(
        rand(2, 3, 4, 5), rand(2, 3, 6, 5)).as_text()
    assert "matmul" in text


@pytest.mark.parametrize("eq,shapes,match", [
    ("ij,jk->ik", [(3, 4), (5, 6)], r"subscript j has sizes 4 and 5"),
    ("ij->ik", [(3, 4)], r"output subscript k does not appear"),
    ("ij,jk", [(3, 4)], r"2 operand subscripts but 1 operands"),
    ("ijk->i", [(3, 4)], r"operand 0 f64\[3, 4\] has 2 dims but 3 subscripts"),
    ("i1->i", [(3, 4)], r"invalid subscript '1'"),
    ("ii->i", [(3, 4)], r"subscript i is repeated in operand f64\[3, 4\].* must be equal"),
    ("ij->ii", [(3, 3)], r"output subscript i appears more than once"),
    ("......->", [(3, 3)], r"more than one ellipsis"),
])
def test_einsum_errors_name_the_op_and_the_line(eq, shapes, match):
    xs = [tj.tensor(rand(*s)) for s in shapes]
    with pytest.raises(ValueError, match=r"einsum: .*" + match + r".*test_ops_more.py:\d+"):
        tj.einsum(eq, *xs)
    with pytest.raises(ValueError, match=r"einsum: "):
        tj.compile(lambda *a: tj.einsum(eq, *a))(*xs)


# -- one_hot, eye -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,n", [((5,), 4), ((2, 3), 6), ((0,), 3), ((1,), 1), ((), 3),
                                     ((4,), 7)])
def test_one_hot(shape, n):
    idx = np.random.default_rng(0).integers(0, n, shape)
    check(lambda a: tj.one_hot(a, n), lambda a: torch.nn.functional.one_hot(a, n), idx)
    check(lambda a: tj.nn.functional.one_hot(a, n), lambda a: torch.nn.functional.one_hot(a, n),
          idx, strided=True)
    if idx.size:
        check(lambda a: tj.one_hot(a), lambda a: torch.nn.functional.one_hot(a), idx,
              compiled=False)


def test_one_hot_errors():
    with pytest.raises(RuntimeError, match=r"one_hot: Class values must be in \[0, 3\)"):
        tj.one_hot(tj.tensor([0, 3]), 3)
    with pytest.raises(TypeError, match=r"one_hot.*int64.*test_ops_more.py"):
        tj.one_hot(tj.tensor([0.0, 1.0]), 3)
    with pytest.raises(RuntimeError, match=r"num_classes=-1 needs a concrete value"):
        tj.compile(lambda a: tj.one_hot(a))(tj.tensor([0, 1]))
    assert tj.nn.functional.one_hot is tj.one_hot


@pytest.mark.parametrize("n,m", [(3, None), (2, 4), (4, 2), (0, 3), (1, 1)])
def test_eye(n, m):
    for dtype, tdtype in ((None, None), (tj.float64, torch.float64), (tj.int64, torch.int64),
                          (tj.bool_, torch.bool)):
        got = tj.eye(n, m, dtype=dtype) if m is not None else tj.eye(n, dtype=dtype)
        want = torch.eye(n, m, dtype=tdtype) if m is not None else torch.eye(n, dtype=tdtype)
        assert got.numpy().dtype == want.numpy().dtype
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert tj.eye(2, requires_grad=True).requires_grad
    out = tj.compile(lambda a: a @ tj.eye(3, dtype=tj.float64))(rand(2, 3))
    np.testing.assert_allclose(out.numpy(), rand(2, 3))


# -- std, norm ----------------------------------------------------------------------------------
STD_CASES = [((), {}), ((1,), {}), ((0,), {"keepdim": True}), ((-1, True, True), {}),
             ((True,), {}), ((), {"dim": (0, 1), "correction": 0}), ((False,), {}),
             ((), {"dim": 1, "unbiased": False})]


@FLOATS
@pytest.mark.parametrize("args,kwargs", STD_CASES)
def test_std(dtype, args, kwargs):
    x = rand(3, 4, dtype=dtype)
    check(lambda a: tj.std(a, *args, **kwargs), lambda a: torch.std(a, *args, **kwargs), x)
    check(lambda a: a.std(*args, **kwargs), lambda a: a.std(*args, **kwargs), x, strided=True)


def test_std_edge_cases_match_torch():
    # a zero deviation has gradient 0 (torch masks it); one element: NaN (n - 1 = 0)
    check(lambda a: a.std(), lambda a: a.std(), np.zeros(3))
    check(lambda a: a.std(0), lambda a: a.std(0), np.ones((1, 2)))
    with pytest.warns(UserWarning):
        check(lambda a: a.std(), lambda a: a.std(), np.zeros(0), compiled=False)


NORM_CASES = [((), {}), (("fro",), {}), ((2,), {"dim": 1}), ((1,), {"dim": -1, "keepdim": True}),
              ((float("inf"),), {"dim": 0}), ((-float("inf"),), {}), ((3,), {}),
              ((0.5,), {"dim": (0, 1)}), ((-1.5,), {}),
              (("fro",), {"dim": (0, 1)}), ((None,), {"dim": 1})]


@FLOATS
@pytest.mark.parametrize("args,kwargs", NORM_CASES)
def test_norm(dtype, args, kwargs):
    x = rand(3, 4, dtype=dtype)
    x[1, 2] = 0.0                  # a zero element: gradient 0 there, as torch
    check(lambda a: tj.norm(a, *args, **kwargs), lambda a: torch.norm(a, *args, **kwargs), x)
    check(lambda a: a.norm(*args, **kwargs), lambda a: a.norm(*args, **kwargs), x, strided=True)


def test_norm_zero_counts_nonzeros_with_a_zero_gradient():
    x = rand(3, 4)
    x[1, 2] = 0.0
    x[2, 0] = np.inf
    check(lambda a: a.norm(0, dim=1), lambda a: a.norm(0, dim=1), x)
    check(lambda a: tj.linalg.vector_norm(a, 0), lambda a: torch.linalg.vector_norm(a, 0), x)


@pytest.mark.parametrize("p", [2, 1, 3, 0.5, float("inf"), -1.0])
def test_norm_of_zeros_has_zero_gradient(p):
    check(lambda a: tj.norm(a, p), lambda a: torch.norm(a, p), np.zeros((2, 3)))


@FLOATS
@pytest.mark.parametrize("ord_,dim", [(2, None), (1, 0), (float("inf"), -1), (3.5, (0, 1)),
                                      (2, ())])
def test_linalg_vector_norm(dtype, ord_, dim):
    x = rand(3, 4, dtype=dtype)
    check(lambda a: tj.linalg.vector_norm(a, ord_, dim),
          lambda a: torch.linalg.vector_norm(a, ord_, dim), x)
    check(lambda a: tj.linalg.vector_norm(a, ord_, dim, keepdim=True),
          lambda a: torch.linalg.vector_norm(a, ord_, dim, keepdim=True), x, compiled=False)


def test_norm_empty_and_errors():
    check(lambda a: a.norm(), lambda a: a.norm(), np.zeros((0, 3)))
    check(lambda a: a.norm(dim=1), lambda a: a.norm(dim=1), np.zeros((0, 3)))
    m = rand(2, 3, 4)
    np.testing.assert_allclose(tj.norm(tj.tensor(m[0]), "nuc").numpy(),
                               torch.norm(torch.tensor(m[0]), "nuc").numpy(), rtol=1e-6)
    np.testing.assert_allclose(tj.norm(tj.tensor(m), "nuc", dim=(2, 0), keepdim=True).numpy(),
                               torch.norm(torch.tensor(m), "nuc", dim=(2, 0),
                                          keepdim=True).numpy(), rtol=1e-6)
    with pytest.raises(RuntimeError, match=r"norm: the nuclear norm needs dim to be a 2-tuple"):
        tj.norm(tj.tensor(m), "nuc")
    with pytest.raises(TypeError, match=r"vector_norm: expects a floating point"):
        tj.norm(tj.tensor([1, 2]))
    with pytest.raises(IndexError, match=r"vector_norm.*empty"):
        tj.linalg.vector_norm(tj.tensor(np.zeros(0)), float("inf"))


# -- repeat, tile -------------------------------------------------------------------------------
@FLOATS
@pytest.mark.parametrize("shape,reps", [((2, 3), (2, 1)), ((2, 3), (1, 2, 3)), ((3,), (4,)),
                                        ((2, 0), (2, 2)), ((1,), (3, 1)), ((), (2, 3)),
                                        ((2, 3), (0, 2))])
def test_repeat(dtype, shape, reps):
    x = rand(*shape, dtype=dtype)
    check(lambda a: a.repeat(*reps), lambda a: a.repeat(*reps), x)
    check(lambda a: a.repeat(reps), lambda a: a.repeat(reps), x, strided=True)


@FLOATS
@pytest.mark.parametrize("shape,reps", [((2, 3), (2,)), ((2, 3), (2, 1, 2)), ((3,), (2, 2)),
                                        ((2, 3), ()), ((0, 2), (3, 1))])
def test_tile(dtype, shape, reps):
    x = rand(*shape, dtype=dtype)
    check(lambda a: tj.tile(a, reps), lambda a: torch.tile(a, reps), x)
    check(lambda a: a.tile(reps), lambda a: a.tile(reps), x, strided=True)


def test_repeat_errors():
    with pytest.raises(RuntimeError, match=r"repeat: number of repeat sizes.*test_ops_more"):
        tj.tensor(rand(2, 3)).repeat(2)


# -- flip, roll ---------------------------------------------------------------------------------
@FLOATS
@pytest.mark.parametrize("shape,dims", [((3, 4), (0,)), ((3, 4), (-1,)), ((2, 3, 4), (0, 2)),
                                        ((0, 3), (0, 1)), ((1, 5), (0, 1)), ((), ()),
                                        ((4,), (0,))])
def test_flip(dtype, shape, dims):
    x = rand(*shape, dtype=dtype)
    check(lambda a: tj.flip(a, dims), lambda a: torch.flip(a, dims), x)
    if dims:                    # Tensor.flip(0, 1): dims as separate ints
        check(lambda a: a.flip(*dims), lambda a: a.flip(*dims), x, strided=True)


def test_fliplr_flipud_and_flip_errors():
    x = rand(3, 4)
    check(tj.fliplr, torch.fliplr, x)
    check(tj.flipud, torch.flipud, x)
    with pytest.raises(RuntimeError, match=r"flip: dims \[0, -2\] name an axis more than once"):
        tj.flip(tj.tensor(x), (0, -2))


@FLOATS
@pytest.mark.parametrize("shape,shifts,dims", [((5,), 2, None), ((3, 4), 1, 1), ((3, 4), -1, 0),
                                               ((3, 4), (1, 2), (0, 1)), ((3, 4), 7, None),
                                               ((0, 3), 1, 1), ((1, 3), 5, 0), ((2, 3), (1, 1),
                                                                                 (1, 1)),
                                               ((3, 4), 0, 1), ((), 1, None)])
def test_roll(dtype, shape, shifts, dims):
    x = rand(*shape, dtype=dtype)
    check(lambda a: tj.roll(a, shifts, dims), lambda a: torch.roll(a, shifts, dims), x)
    check(lambda a: a.roll(shifts, dims), lambda a: a.roll(shifts, dims), x, strided=True)


# -- bmm, t, *_as, type_as, new_* -----------------------------------------------------------------
@FLOATS
@pytest.mark.parametrize("sa,sb", [((2, 3, 4), (2, 4, 5)), ((1, 1, 1), (1, 1, 1)),
                                   ((2, 0, 3), (2, 3, 4)), ((0, 2, 3), (0, 3, 4))])
def test_bmm(dtype, sa, sb):
    a, b = rand(*sa, dtype=dtype), rand(*sb, dtype=dtype, seed=1)
    check(tj.bmm, torch.bmm, a, b)
    check(lambda x, y: x.bmm(y), lambda x, y: x.bmm(y), a, b, strided=True)


def test_bmm_errors():
    with pytest.raises(RuntimeError, match=r"bmm: both operands must be 3-d.*test_ops_more"):
        tj.bmm(tj.tensor(rand(2, 3)), tj.tensor(rand(3, 2)))
    with pytest.raises(RuntimeError, match=r"bmm: shapes"):
        tj.bmm(tj.tensor(rand(2, 3, 4)), tj.tensor(rand(1, 4, 2)))


@pytest.mark.parametrize("shape", [(3, 4), (4,), (), (0, 2)])
def test_t(shape):
    x = rand(*shape)
    check(lambda a: a.t(), lambda a: a.t(), x)
    check(tj.t, torch.t, x, strided=True)
    if len(shape) == 2:
        with pytest.raises(RuntimeError, match=r"t: expects a tensor with <= 2 dimensions"):
            tj.tensor(rand(2, 2, 2)).t()


@FLOATS
def test_as_methods(dtype):
    x, y = rand(3, 1, dtype=dtype), rand(2, 3, 4)
    check(lambda a, b: a.expand_as(b[0]), lambda a, b: a.expand_as(b[0]), x, y)
    check(lambda a, b: b.view_as(a.expand(3, 8)), lambda a, b: b.view_as(a.expand(3, 8)), x, y)
    check(lambda a, b: b.reshape_as(a.expand(4, 6)), lambda a, b: b.reshape_as(a.expand(4, 6)),
          rand(4, 1), y)
    check(lambda a, b: a.type_as(b), lambda a, b: a.type_as(b), x, y.astype(np.float32))
    check(lambda a, b: b.type_as(a), lambda a, b: b.type_as(a), x, np.arange(3))


@pytest.mark.parametrize("method,args,kwargs", [
    ("new_zeros", (2, 3), {}), ("new_zeros", ((2, 3),), {}), ("new_ones", (4,), {}),
    ("new_ones", ((),), {}), ("new_full", ((2, 2), 3.5), {}), ("new_zeros", (0, 2), {}),
    ("new_ones", (2,), {"dtype": "int64"}), ("new_full", ((3,), 7), {"dtype": "float64"}),
    ("new_tensor", ([1, 2, 3],), {}), ("new_tensor", ([1.5, 2.0],), {"dtype": "int64"}),
    ("new_empty", (2, 3), {})])
@pytest.mark.parametrize("src", ["float32", "int64"])
def test_new_constructors(method, args, kwargs, src):
    a = np.arange(6).astype(src).reshape(2, 3)
    tkw = {k: getattr(torch, v) for k, v in kwargs.items()}
    jkw = {k: getattr(tj, v) for k, v in kwargs.items()}
    want = getattr(torch.tensor(a), method)(*args, **tkw)
    for got in (getattr(tj.tensor(a), method)(*args, **jkw),
                tj.compile(lambda x: getattr(x, method)(*args, **jkw) + 0)(a)):
        assert got.numpy().dtype == want.numpy().dtype and got.shape == tuple(want.shape)
        if method != "new_empty":
            np.testing.assert_array_equal(got.numpy(), want.numpy())
        assert not got.requires_grad
    assert getattr(tj.tensor(a), method)(*args, **jkw).device == tj.tensor(a).device


def test_new_zeros_requires_grad_and_scalar_methods():
    x = tj.tensor(rand(2, 3))
    z = x.new_zeros(2, requires_grad=True)
    assert z.requires_grad and z.is_leaf
    assert x.size() == (2, 3) and x.size(-1) == 3 and x.size(0) == 2
    assert x.numel() == 6 and x.dim() == 2
    assert x.contiguous().shape == (2, 3)


# -- list indexing, inference_mode, Variable ----------------------------------------------------
@FLOATS
@pytest.mark.parametrize("key", [(slice(None), [-1], slice(None)), (slice(None), [0, -1]),
                                 ([-1, 0, -2],), (Ellipsis, [-1]), ([1], slice(None), [-2])])
def test_list_indexing_with_negative_indices(dtype, key):
    x = rand(3, 4, 5, dtype=dtype)
    check(lambda a: a[key], lambda a: a[key], x)
    check(lambda a: a[key], lambda a: a[key], x, strided=True)


def test_inference_mode():
    w = tj.tensor(rand(3), requires_grad=True)
    with tj.inference_mode():
        assert not tj.is_grad_enabled() and tj.is_inference_mode_enabled()
        y = w * 2
    assert not y.requires_grad and tj.is_grad_enabled() and not tj.is_inference_mode_enabled()
    with tj.inference_mode(False):
        assert tj.is_grad_enabled() and (w * 2).requires_grad

    @tj.inference_mode()
    def f(a):
        return a * 3

    @tj.inference_mode
    def g(a):
        return a * 3
    assert not f(w).requires_grad and not g(w).requires_grad
    assert (w * 3).requires_grad
    with tj.no_grad():
        with tj.inference_mode(False):
            assert not tj.is_grad_enabled()


def test_autograd_variable_is_a_deprecated_alias_returning_a_tensor():
    from tracejit.autograd import Variable
    x = tj.tensor([1.0, 2.0])
    v = Variable(x)
    assert type(v) is tj.Tensor and not v.requires_grad
    w = Variable(x, requires_grad=True)
    assert w.requires_grad and w.is_leaf and not x.requires_grad
    (w * w).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 4.0])
    with pytest.raises(TypeError, match="Variable data has to be a tensor"):
        Variable([1.0])
