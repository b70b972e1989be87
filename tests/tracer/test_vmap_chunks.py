"""tj.vmap(chunk_size=) (#15): chunked runs write mapped in-place updates back like the
unchunked run (also when autograd follows them), and randomness='same' stays one set of
numbers for the whole batch; against torch.func.vmap and the unchunked run."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
from torch.func import vmap as tvmap  # noqa: E402

X = np.arange(10.0).reshape(5, 2) - 3.0
Y = np.arange(10.0).reshape(5, 2) * 0.5 + 1.0


def upd(x, y):
    x.mul_(y)
    return x * 2


@pytest.mark.parametrize("chunk", [None, 1, 2, 5, 7])
def test_in_place_update_of_a_mapped_argument_that_requires_grad(chunk):
    """The updated argument is written back and the gradient flows through the update to
    what it was computed from, as with torch.func.vmap."""
    got = []
    for lib, vm in ((tj, tj.vmap), (torch, tvmap)):
        a = lib.tensor(X, requires_grad=True)
        y = lib.tensor(Y, requires_grad=True)
        x = a * 1
        out = vm(upd, chunk_size=chunk)(x, y)
        (out.sum() + (x * x).sum()).backward()
        got.append([x.detach().numpy(), out.detach().numpy(), a.grad.numpy(), y.grad.numpy()])
    for g, w in zip(*got):
        np.testing.assert_allclose(g, w, rtol=1e-12)


@pytest.mark.parametrize("chunk", [None, 2])
def test_in_place_update_under_grad_and_compile(chunk):
    def loss(a, y):
        x = a * 1
        out = tj.vmap(upd, chunk_size=chunk)(x, y)
        return out.sum() + (x * x).sum()
    want_a = 2 * Y + 2 * X * Y * Y        # d/da of sum(2 a y) + sum((a y)^2)
    want_y = 2 * X + 2 * X * X * Y
    for g in (tj.grad(loss, argnums=(0, 1)), tj.grad(tj.compile(loss), argnums=(0, 1))):
        ga, gy = g(tj.tensor(X), tj.tensor(Y))
        np.testing.assert_allclose(ga.numpy(), want_a, rtol=1e-12)
        np.testing.assert_allclose(gy.numpy(), want_y, rtol=1e-12)


@pytest.mark.parametrize("compiled", [False, True])
def test_chunked_write_back_into_arrays_along_another_axis(compiled):
    def g(x):
        x[0] = x[1] * 3
        return x.sum()
    want = np.arange(10.0).reshape(2, 5)
    tj.vmap(g, in_axes=1)(want)
    for chunk in (1, 2, 4):
        xa = np.arange(10.0).reshape(2, 5)
        f = tj.vmap(g, in_axes=1, chunk_size=chunk)
        (tj.compile(f) if compiled else f)(xa)
        np.testing.assert_array_equal(xa, want)


@pytest.mark.parametrize("compiled", [False, True])
def test_randomness_same_is_one_draw_for_all_chunks(compiled):
    def f(x):
        return x + tj.rand(())
    res = []
    for chunk in (None, 2, 3):
        tj.manual_seed(0)
        v = tj.vmap(f, randomness="same", chunk_size=chunk)
        out = (tj.compile(v) if compiled else v)(tj.zeros(5)).numpy()
        res.append((out, tj.rand(()).item()))     # and the generator ends where it would
    for out, after in res:
        assert np.all(out == out[0])
        np.testing.assert_array_equal(out, res[0][0])
        assert after == res[0][1]


def test_randomness_different_chunks_differ_per_example():
    tj.manual_seed(0)
    out = tj.vmap(lambda x: x + tj.rand(()), randomness="different", chunk_size=2)(tj.zeros(6))
    assert len(set(out.numpy().tolist())) == 6
