"""torch.gather / take_along_dim with one index per position along dim and the input's shape
elsewhere (an NLL's `logp.gather(1, target[:, None])`) read with the take_along primitive
(tracer/gathering.py): the gradient is a select against the index, with no zero-filled
scatter of the input's size. Values and gradients against torch 2.13, eager and compiled;
out-of-range and negative indices still raise as torch (gather) or wrap (take_along_dim)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tracejit as tj


def _torch_gather(x, d, idx, g):
    xt = torch.tensor(x, requires_grad=True)
    out = torch.gather(xt, d, torch.tensor(idx))
    out.backward(torch.tensor(g))
    return out.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("d", [0, 1, 2, -1])
@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32])
def test_one_per_position_matches_torch(d, idx_dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5))
    shape = list(x.shape)
    shape[d] = 1
    idx = rng.integers(0, x.shape[d], shape).astype(idx_dtype)
    g = rng.standard_normal(shape)
    want, want_g = _torch_gather(x, d, idx.astype(np.int64), g)

    def loss(x, i):
        return (tj.gather(x, d, i) * tj.tensor(g)).sum()

    np.testing.assert_array_equal(tj.gather(tj.tensor(x), d, tj.tensor(idx)).numpy(), want)
    np.testing.assert_array_equal(tj.compile(lambda x, i: tj.gather(x, d, i))(x, idx).numpy(),
                                  want)
    np.testing.assert_array_equal(tj.grad(loss)(tj.tensor(x), tj.tensor(idx)).numpy(), want_g)
    np.testing.assert_array_equal(tj.compile(tj.grad(loss))(x, idx).numpy(), want_g)


def test_nll_gradient_is_a_select_not_a_scatter():
    x = np.random.default_rng(1).standard_normal((8, 300))
    t = np.random.default_rng(2).integers(0, 300, 8)

    def nll(x, t):
        return -tj.gather(tj.log_softmax(x, 1), 1, t.unsqueeze(1)).mean()

    xt = torch.tensor(x, requires_grad=True)
    (-torch.gather(torch.log_softmax(xt, 1), 1, torch.tensor(t)[:, None]).mean()).backward()
    f = tj.compile(tj.grad(nll))
    np.testing.assert_allclose(f(x, t).numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-15)
    text = str(f.lower(x, t).graph)
    assert "scatter_add" not in text and "take_along" in text, text


def test_compiled_out_of_range_and_negative_indices_still_raise():
    x = np.zeros((4, 6))
    f = tj.compile(lambda x, t: tj.gather(x, 1, t.unsqueeze(1)))
    for bad in ([1, 6, 0, 2], [1, -1, 0, 2]):
        with pytest.raises(RuntimeError, match=r"gather: an index is out of bounds for dim 1"):
            f(x, np.array(bad))
        with pytest.raises(RuntimeError, match=r"gather"):
            tj.gather(tj.tensor(x), 1, tj.tensor(np.array(bad)[:, None]))
    np.testing.assert_array_equal(f(x + 1.0, np.array([1, 5, 0, 2])).numpy(), np.ones((4, 1)))


def test_take_along_dim_broadcast_and_negative_indices_match_torch():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 4))
    idx = rng.integers(-5, 5, (1, 1, 4))          # broadcast over the first axis, wraps
    g = rng.standard_normal((3, 1, 4))
    xt = torch.tensor(x, requires_grad=True)
    out = torch.take_along_dim(xt, torch.tensor(idx), 1)
    out.backward(torch.tensor(g))

    def loss(x, i):
        return (tj.take_along_dim(x, i, 1) * tj.tensor(g)).sum()

    np.testing.assert_array_equal(tj.take_along_dim(tj.tensor(x), tj.tensor(idx), 1).numpy(),
                                  out.detach().numpy())
    np.testing.assert_array_equal(tj.compile(tj.grad(loss))(x, idx).numpy(), xt.grad.numpy())
    np.testing.assert_array_equal(tj.grad(loss)(tj.tensor(x), tj.tensor(idx)).numpy(),
                                  xt.grad.numpy())


def test_smaller_index_keeps_the_general_gather():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 5))
    idx = rng.integers(0, 5, (2, 1))              # fewer rows than x: torch.gather allows it
    g = rng.standard_normal((2, 1))
    want, want_g = _torch_gather(x, 1, idx, g)
    np.testing.assert_array_equal(tj.gather(tj.tensor(x), 1, tj.tensor(idx)).numpy(), want)
    got = tj.compile(tj.grad(lambda x, i: (tj.gather(x, 1, i) * tj.tensor(g)).sum()))(x, idx)
    np.testing.assert_array_equal(got.numpy(), want_g)
