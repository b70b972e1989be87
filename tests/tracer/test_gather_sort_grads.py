"""Gradients of the gathers and of sort/topk against torch 2.13 in float64, eager and compiled:
repeated indices accumulate, negative indices (x[idx], take_along_dim), size-0 and size-1
axes, non-contiguous inputs, 3-D inputs, int32 indices. sort/topk read their values with
gathering.along (torch.gather's read in x's own layout): the compiled gradient is one
scatter-add into zeros of the input's size with no transpose and no run-time index check
(argsort's indices are in range by construction); topk(k=1) reads with take_along (a select,
no scatter); a general gather checks its index once."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tracejit as tj

R = np.random.default_rng(0)
X = R.standard_normal((4, 5))
X_NC = R.standard_normal((5, 4)).T                  # non-contiguous
X3 = R.standard_normal((2, 3, 4))
DUP = np.array([[0, 0, 4], [1, 1, 1], [3, 2, 3], [4, 4, 0]])
DUP3 = np.array([[[0, 2], [2, 2]], [[1, 1], [0, 0]]])
TIES = np.array([[1., 2., 1., 2., 1.], [0., 0., 0., 0., 0.]])

# name: (tracejit fn, torch fn, input)
CASES = {
    "gather d1 repeats": (lambda a: tj.gather(a, 1, tj.tensor(DUP)),
                          lambda a: torch.gather(a, 1, torch.tensor(DUP)), X),
    "gather d1 repeats non-contiguous": (lambda a: tj.gather(a, 1, tj.tensor(DUP)),
                                         lambda a: torch.gather(a, 1, torch.tensor(DUP)), X_NC),
    "gather d0 repeats": (lambda a: tj.gather(a, 0, tj.tensor(DUP[:3].T % 4)),
                          lambda a: torch.gather(a, 0, torch.tensor(DUP[:3].T % 4)), X),
    "gather int32 index": (lambda a: tj.gather(a, 1, tj.tensor(DUP.astype(np.int32))),
                           lambda a: torch.gather(a, 1, torch.tensor(DUP)), X_NC),
    "gather index smaller than input": (lambda a: tj.gather(a, 1, tj.tensor(DUP[:2, :2])),
                                        lambda a: torch.gather(a, 1, torch.tensor(DUP[:2, :2])),
                                        X),
    "gather more than the axis": (lambda a: tj.gather(a, 1, tj.tensor(np.tile(DUP, 3))),
                                  lambda a: torch.gather(a, 1, torch.tensor(np.tile(DUP, 3))),
                                  X),
    "gather 3-D": (lambda a: tj.gather(a, 1, tj.tensor(DUP3)),
                   lambda a: torch.gather(a, 1, torch.tensor(DUP3)), X3),
    "gather empty index": (lambda a: tj.gather(a, 1, tj.tensor(np.zeros((4, 0), np.int64))),
                           lambda a: torch.gather(a, 1, torch.zeros((4, 0), dtype=torch.int64)),
                           X),
    "gather from a size-1 axis": (
        lambda a: tj.gather(a, 1, tj.tensor(np.zeros((3, 4), np.int64))),
        lambda a: torch.gather(a, 1, torch.zeros((3, 4), dtype=torch.int64)), X[:3, :1]),
    "take_along_dim negative": (lambda a: tj.take_along_dim(a, tj.tensor(-DUP - 1), 1),
                                lambda a: torch.take_along_dim(a, torch.tensor((-DUP - 1) % 5), 1),
                                X_NC),
    "index_select repeats": (lambda a: tj.index_select(a, 1, tj.tensor([4, 0, 4, 4])),
                             lambda a: torch.index_select(a, 1, torch.tensor([4, 0, 4, 4])),
                             X_NC),
    "index_select empty": (lambda a: tj.index_select(a, 0, tj.tensor(np.zeros(0, np.int64))),
                           lambda a: torch.index_select(a, 0, torch.zeros(0, dtype=torch.int64)),
                           X),
    "x[idx] repeats negative": (lambda a: a[tj.tensor([-1, 0, -1, 3])],
                                lambda a: a[torch.tensor([-1, 0, -1, 3])], X_NC),
    "x[i, j] repeats": (lambda a: a[np.array([0, 0, 3]), np.array([-1, -1, 2])],
                        lambda a: a[torch.tensor([0, 0, 3]), torch.tensor([-1, -1, 2])], X),
    "x[:, idx]": (lambda a: a[:, np.array([1, 1, -2])],
                  lambda a: a[:, torch.tensor([1, 1, -2])], X_NC),
    "sort d1": (lambda a: tj.sort(a, 1)[0], lambda a: torch.sort(a, 1)[0], X_NC),
    "sort d0 descending": (lambda a: tj.sort(a, 0, descending=True)[0],
                           lambda a: torch.sort(a, 0, descending=True)[0], X_NC),
    "sort ties": (lambda a: tj.sort(a, 1)[0], lambda a: torch.sort(a, dim=1, stable=True)[0],
                  TIES),
    "sort 3-D d1": (lambda a: tj.sort(a, 1)[0], lambda a: torch.sort(a, 1)[0], X3),
    "sort size-1 axis": (lambda a: tj.sort(a, 1)[0], lambda a: torch.sort(a, 1)[0], X[:, :1]),
    "sort size-0 axis": (lambda a: tj.sort(a, 1)[0], lambda a: torch.sort(a, 1)[0],
                         np.zeros((3, 0))),
    "sort no rows": (lambda a: tj.sort(a, 1)[0], lambda a: torch.sort(a, 1)[0],
                     np.zeros((0, 4))),
    "topk 2": (lambda a: tj.topk(a, 2)[0], lambda a: torch.topk(a, 2)[0], X_NC),
    "topk 3 d0 smallest": (lambda a: tj.topk(a, 3, dim=0, largest=False)[0],
                           lambda a: torch.topk(a, 3, dim=0, largest=False)[0], X_NC),
    "topk 1": (lambda a: tj.topk(a, 1, dim=0)[0], lambda a: torch.topk(a, 1, dim=0)[0], X_NC),
    "topk 0": (lambda a: tj.topk(a, 0)[0], lambda a: torch.topk(a, 0)[0], X),
    "topk ties": (lambda a: tj.topk(a, 2)[0], lambda a: torch.topk(a, 2)[0], TIES[:1]),
    "topk 3-D d1": (lambda a: tj.topk(a, 2, 1)[0], lambda a: torch.topk(a, 2, 1)[0], X3),
    "topk size-1 axis": (lambda a: tj.topk(a, 1)[0], lambda a: torch.topk(a, 1)[0], X[:, :1]),
}


def _torch(f, x, g):
    xt = torch.tensor(x, requires_grad=True)
    y = f(xt)
    y.backward(torch.tensor(g))
    return y.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name", list(CASES))
def test_values_and_gradients_match_torch(name, compiled):
    f, f_torch, x = CASES[name]
    g = np.random.default_rng(1).standard_normal(tuple(f_torch(torch.tensor(x)).shape))
    want, want_g = _torch(f_torch, x, g)

    def loss(a):
        return (f(a) * tj.tensor(g)).sum()
    if compiled:
        got = tj.compile(f)(tj.tensor(x)).numpy()
        got_g = tj.compile(tj.grad(loss))(tj.tensor(x)).numpy()
    else:
        xt = tj.tensor(x, requires_grad=True)
        y = f(xt)
        y.backward(tj.tensor(g))
        got = y.detach().numpy()
        got_g = xt.grad.numpy() if xt.grad is not None else np.zeros_like(x)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-13, atol=1e-13)


def _grad_graph(f, x) -> str:
    return str(tj.compile(tj.grad(lambda a: f(a).sum())).lower(x).graph)


@pytest.mark.parametrize("f", [lambda a: tj.sort(a, 0)[0], lambda a: tj.sort(a, 1)[0],
                               lambda a: tj.topk(a, 2, dim=0)[0],
                               lambda a: tj.topk(a, 3, dim=1, largest=False)[0]],
                         ids=["sort d0", "sort d1", "topk d0", "topk d1"])
def test_sort_gradient_is_one_scatter_without_transpose_or_check(f):
    text = _grad_graph(f, X3)
    assert text.count("scatter_add") == 1, text
    assert "transpose" not in text, text
    # argsort's positions need no run-time bounds check (a check compares with lt/ge)
    assert " ge " not in text and " lt " not in text, text


def test_topk_one_reads_with_take_along():
    f = lambda a: tj.topk(a, 1, dim=1)[0]                  # noqa: E731
    assert "take_along" in str(tj.compile(f).lower(X).graph)
    text = _grad_graph(f, X)
    assert "scatter_add" not in text and " eq " in text, text     # a select against the index


def test_general_gather_checks_its_index_once():
    f = tj.compile(tj.grad(lambda a, i: tj.gather(a, 1, i).sum()))
    text = str(f.lower(X, DUP).graph)
    assert text.count(" ge ") == 1 and text.count("scatter_add") == 1, text
    with pytest.raises(RuntimeError, match="gather: an index is out of bounds"):
        f(X, DUP + 1)


def test_eager_gather_with_a_host_index_runs_no_index_arithmetic(monkeypatch):
    """The flat positions of an eager host index are one NumPy expression, not an iota, mul
    and add primitive per axis (each an op through the dispatcher)."""
    from tracejit.tracer import eager
    ran, run_impl = [], eager.run_impl

    def counting(prim, *a, **k):
        ran.append(prim.name)
        return run_impl(prim, *a, **k)
    x = tj.tensor(X3, requires_grad=True)
    idx = tj.tensor(DUP3)
    monkeypatch.setattr(eager, "run_impl", counting)
    y = tj.gather(x, 1, idx)
    monkeypatch.undo()
    assert "gather" in ran and not {"iota", "mul", "add"} & set(ran), ran
    y.backward(tj.tensor(np.ones(DUP3.shape)))
    _, want_g = _torch(lambda a: torch.gather(a, 1, torch.tensor(DUP3)), X3, np.ones(DUP3.shape))
    np.testing.assert_array_equal(x.grad.numpy(), want_g)


@pytest.mark.parametrize("dim", [1, None])
def test_take_along_dim_errors_name_it_and_the_users_index(dim):
    """Along a dim, indices in [-n, n) (negative from the end); of the flat input (dim=None)
    in [0, n), as torch. Errors name take_along_dim and the index as the user gave it."""
    x = tj.tensor(np.arange(12.0).reshape(4, 3))
    xt = torch.arange(12.0).reshape(4, 3)
    n, lo = (3, -3) if dim == 1 else (12, 0)
    for bad in (lo - 1, n):
        with pytest.raises(RuntimeError, match=rf"take_along_dim: index \[{bad}, {bad}\] is "
                                               rf"out of bounds for dim {dim or 0} of size {n}"):
            tj.take_along_dim(x, tj.tensor([[bad]]), dim)
    f = tj.compile(lambda x, i: tj.take_along_dim(x, i, dim))
    with pytest.raises(RuntimeError, match=r"take_along_dim: an index is out of bounds"):
        f(x, tj.tensor([[lo - 1]]))
    if dim is None:
        with pytest.raises(RuntimeError, match="out of bounds"):
            torch.take_along_dim(xt, torch.tensor([-1]), dim)
    want = torch.take_along_dim(xt, torch.tensor([[lo, n - 1]]), dim)
    np.testing.assert_array_equal(f(x, tj.tensor([[lo, n - 1]])).numpy(), want.numpy())
    np.testing.assert_array_equal(tj.take_along_dim(x, tj.tensor([[lo, n - 1]]), dim).numpy(),
                                  want.numpy())
