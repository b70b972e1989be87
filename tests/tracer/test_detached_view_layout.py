"""detach() and .data of a view are views of its base with the view's layout (torch): their
contiguous() is themselves when that layout is contiguous, and their reshape()/view() alias
the base when the strides allow. tracejit took the layout from the detached array, which
owns a copy, so x[2].detach().contiguous() and .reshape() copied (an in-place write through
them silently missed the base) and .view() raised where torch runs (eager fuzzer seed 17707).
Each case runs on both libraries; the base's values after the writes are compared."""
import numpy as np
import pytest
import torch

import tracejit as tj

VIEWS = {
    "row": lambda x: x[1],
    "transposed": lambda x: x.transpose(0, 2),
    "column_slice": lambda x: x[:, 1:3],
    "strided": lambda x: x[1, :, ::2],
    "unbind": lambda x: x.unbind(0)[1],
    "of_detached_base": lambda x: x.detach()[0].t(),
}
DETACH = {"detach": lambda v: v.detach(), "data": lambda v: v.data}


def _run(lib, view, detach, write):
    x = lib.tensor(np.arange(24, dtype=np.float64).reshape(2, 3, 4))
    d = DETACH[detach](VIEWS[view](x))
    if write == "contiguous":
        d.contiguous().add_(1.0)
    elif write == "reshape":
        d.reshape(-1).mul_(3.0)
    else:
        try:
            d.view(-1).sub_(5.0)
        except RuntimeError:
            return "raised"
    return x.detach().numpy().copy()


@pytest.mark.parametrize("write", ["contiguous", "reshape", "view"])
@pytest.mark.parametrize("detach", sorted(DETACH))
@pytest.mark.parametrize("view", sorted(VIEWS))
def test_detached_view_aliases_like_torch(view, detach, write):
    want = _run(torch, view, detach, write)
    got = _run(tj, view, detach, write)
    if isinstance(want, str) or isinstance(got, str):
        assert got == want
    else:
        np.testing.assert_array_equal(got, want)


def test_unbind_of_strided_leaf_detached_view_as_in_seed_17707():
    big = np.zeros((3, 10), np.float32)
    big[:, ::2] = np.arange(15, dtype=np.float32).reshape(3, 5)
    x = tj.Tensor(big[:, ::2], requires_grad=True)
    v = x.unbind(0)[2].detach().view(1, 5, 1)
    v.add_(1.0)
    np.testing.assert_array_equal(x.detach().numpy()[2], np.arange(10, 15) + 1.0)
