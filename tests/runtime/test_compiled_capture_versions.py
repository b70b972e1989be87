"""A captured tensor written in place inside a compiled function (under no_grad, as an
optimizer does) makes what backward saved of its views stale, as eagerly: backward inside the
trace raises torch's version error instead of reading the new value (compiled fuzzer, module
seed 751: amax's tie mask compared the updated diagonal with the old maximum, and the
parameter's gradient was NaN). The eager counter is unchanged by tracing itself."""
import numpy as np
import pytest
import torch

import tracejit as tj

P0 = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 0.5, 7.0, 8.0]])


def _body(lib, p, x, update):
    d = p.diagonal()
    m = d.amax(0, keepdim=True)
    if update:
        with lib.no_grad():
            p.add_(-1.0)
    loss = (m * x).sum()
    loss.backward()
    return loss


def test_saved_view_of_capture_written_in_place_raises_as_eagerly():
    tp = torch.tensor(P0, requires_grad=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        _body(torch, tp, torch.tensor(2.0), True)
    p = tj.tensor(P0, requires_grad=True)
    f = tj.compile(lambda x: _body(tj, p, x, True))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        f(tj.tensor(2.0))
    assert p.grad is None or not np.any(np.isnan(p.grad.numpy()))


def test_unwritten_capture_still_computes_and_versions_match_eager():
    tp = torch.tensor(P0, requires_grad=True)
    _body(torch, tp, torch.tensor(2.0), False)
    p = tj.tensor(P0, requires_grad=True)
    f = tj.compile(lambda x: _body(tj, p, x, False))
    for _ in range(2):
        p.grad = None
        f(tj.tensor(2.0))
        np.testing.assert_array_equal(p.grad.numpy(), tp.grad.numpy())


def test_version_counter_moves_once_per_write_per_call():
    t = tj.zeros(3, dtype=tj.float64)

    @tj.compile
    def f(x):
        t.add_(x)
        t.mul_(2.0)
        return x * 1

    v0 = t._version[0]
    f(tj.ones(3, dtype=tj.float64))
    assert t._version[0] == v0 + 2
    f(tj.ones(3, dtype=tj.float64))
    assert t._version[0] == v0 + 4
