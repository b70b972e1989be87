"""take_along (ir/prims_gather.py): one element per position along an axis, whose gradient is
an elementwise select instead of a scatter. cross_entropy reads its targets' log-probabilities
with it, so the compiled loss-and-gradient writes the [N, C] gradient and no second [N, C]
buffer (the zero-filled scatter of gather's adjoint). Checked against NumPy, torch 2.13, and the
compiled program's memory plan (`.lower().memory`)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tracejit as tj
from tracejit.ir import P, bind
from tracejit.nn import functional as F


def _memory_report(n, c, **kw):
    x = np.random.default_rng(0).standard_normal((n, c)).astype(np.float32)
    t = np.random.default_rng(1).integers(0, c, n)
    f = tj.compile(tj.value_and_grad(lambda x, t: F.cross_entropy(x, t, **kw)))
    return f.lower(x, t).memory


@pytest.mark.parametrize("kw", [{}, {"ignore_index": 3}, {"label_smoothing": 0.1},
                                {"reduction": "sum"}], ids=str)
def test_cross_entropy_backward_has_no_class_sized_intermediate(kw):
    n, c = 64, 300
    text = _memory_report(n, c, **kw)
    sizes = [int(np.prod([int(d) for d in m.split(",")]))
             for m in re.findall(r"slot \d+ %\w+ \w+\[([\d,]+)\]", text)]
    # intermediates of the plan: row statistics and scalars only; the gradient is an output
    assert sizes and max(sizes) < n * c, text
    peak = re.search(r"peak ([\d.]+) (\w+)", text)
    assert peak.group(2) in ("B", "KiB"), text


def test_values_match_numpy_and_negative_indices_wrap():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5, 4))
    for axis in range(3):
        shape = x.shape[:axis] + x.shape[axis + 1:]
        idx = rng.integers(-x.shape[axis], x.shape[axis], shape)
        want = np.take_along_axis(x, np.expand_dims(idx, axis), axis).squeeze(axis)

        def f(x, i):
            return bind(P.take_along, x, i, axis=axis)

        np.testing.assert_array_equal(f(tj.tensor(x), tj.tensor(idx)).numpy(), want)
        np.testing.assert_array_equal(tj.compile(f)(x, idx).numpy(), want)
        # the gradient: the cotangent where each index points (negative ones wrapped)
        g = rng.standard_normal(shape)
        gx = tj.grad(lambda x: (f(x, tj.tensor(idx)) * tj.tensor(g)).sum())(tj.tensor(x))
        want_g = np.zeros_like(x)
        np.put_along_axis(want_g, np.expand_dims(idx % x.shape[axis], axis),
                          np.expand_dims(g, axis), axis)
        np.testing.assert_array_equal(gx.numpy(), want_g)
        gc = tj.compile(tj.grad(lambda x, i: (f(x, i) * tj.tensor(g)).sum()))(x, idx)
        np.testing.assert_array_equal(gc.numpy(), want_g)


def test_errors_name_the_op_and_shapes():
    x = tj.tensor(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"take_along.*shape \[3\]"):
        bind(P.take_along, x, tj.tensor(np.zeros(4, np.int64)), axis=1)
    with pytest.raises(TypeError, match="take_along.*integers"):
        bind(P.take_along, x, tj.tensor(np.zeros(3)), axis=1)
    with pytest.raises(IndexError, match="take_along"):
        bind(P.take_along, x, tj.tensor(np.array([0, 4, 1])), axis=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_grad_matches_torch(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 7, 3)).astype(dtype)
    t = rng.integers(0, 7, (6, 3))
    t[1, 2] = -1
    w = rng.random(7).astype(dtype)
    kw = dict(weight=w, ignore_index=-1, label_smoothing=0.05)
    xt = torch.tensor(x, requires_grad=True)
    TF.cross_entropy(xt, torch.tensor(t), weight=torch.tensor(w), ignore_index=-1,
                     label_smoothing=0.05).backward()

    def loss(x, t):
        return F.cross_entropy(x, t, **{**kw, "weight": tj.tensor(w)})

    tol = 1e-12 if dtype == np.float64 else 1e-5
    for fn in (tj.grad(loss), tj.compile(tj.grad(loss))):
        np.testing.assert_allclose(fn(tj.tensor(x), tj.tensor(t)).numpy(), xt.grad.numpy(),
                                   rtol=tol, atol=tol)
