"""A compiled function's argument that is a non-contiguous view outside (x.t(), x[:, ::2])
has torch's layout inside the trace: its contiguous() and reshape() copy where torch's do, so
an in-place write through them leaves the caller's tensor alone, and view() raises where
torch's does. The trace used to treat every argument as contiguous: contiguous() returned the
argument itself and the write reached the caller's base (compiled fuzzer seed 3068). The
layout is part of the cache key, so calls alternating layouts each get the right trace."""
import numpy as np
import pytest
import torch

import tracejit as tj

LAYOUTS = {
    "contiguous": lambda b: b,
    "transposed": lambda b: b.t(),
    "strided": lambda b: b[:, ::2],
    "transposed_twice": lambda b: b.t().t(),
    "row": lambda b: b[1:3],
    "expanded_column": lambda b: b[:, :1].expand(4, 3),
}


def _contiguous_write(x):
    y = x.contiguous()
    y.add_(100.0)
    return y * 1.0


def _reshape_write(x):
    z = x.reshape(-1)
    z.mul_(2.0)
    return z * 1.0


def _view_of_argument(x):
    return x.view(-1) * 2.0


BODIES = {"contiguous_write": _contiguous_write, "reshape_write": _reshape_write,
          "view": _view_of_argument}


def _run(lib, call, layout):
    base = lib.tensor(np.arange(16.0).reshape(4, 4))
    try:
        out = call(LAYOUTS[layout](base))
    except RuntimeError as e:
        return "raised", str(e)
    return out.detach().numpy().copy(), base.detach().numpy().copy()


@pytest.mark.parametrize("body", sorted(BODIES))
def test_view_arguments_follow_torch_layout(body):
    f = tj.compile(BODIES[body])
    for layout in list(LAYOUTS) * 2:        # (alternating layouts: one trace each, reused)
        want = _run(torch, BODIES[body], layout)
        got = _run(tj, f, layout)
        if isinstance(want[0], str):
            assert got[0] == "raised", (layout, got)
            assert "view" in got[1]
            continue
        assert not isinstance(got[0], str), (layout, got)
        np.testing.assert_array_equal(got[0], want[0], err_msg=layout)
        np.testing.assert_array_equal(got[1], want[1], err_msg=layout)


def test_layouts_are_separate_cache_entries():
    f = tj.compile(_contiguous_write)
    base = tj.tensor(np.zeros((3, 3)))
    f(base)
    f(base.t())
    f(base[:, :2].t())
    f(base)
    assert f.misses == 3
