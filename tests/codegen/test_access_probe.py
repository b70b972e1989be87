"""codegen.access_probe: the element step of each buffer read along a loop kernel's innermost
axis, from the registry's index maps, checked against the layouts NumPy gives the same reads."""
import numpy as np

import tracejit as tj
from tracejit.codegen.access_probe import innermost_steps
from tracejit.codegen.fusion import plan


def _loop_kernels(fn, *args):
    g = tj.compile(fn).lower(*args).graph
    return [k for k in plan(g).kernels if k.kind == "loop"]


def _steps(fn, *args):
    ks = _loop_kernels(fn, *args)
    assert len(ks) == 1
    return ks[0], innermost_steps(ks[0])


def test_outer_product_reads_broadcast_and_contiguous():
    a = np.ones((4, 6), np.float32)
    g = np.ones((4, 10), np.float32)
    _, steps = _steps(lambda x, y: tj.reshape(x, (4, 6, 1)) * tj.reshape(y, (4, 1, 10)), a, g)
    assert sorted(steps) == [0, 1]     # x[b, i] stays, y[b, j] moves by one


def test_transposed_read_steps_by_the_source_row():
    a = np.ones((10, 300), np.float32)
    _, steps = _steps(lambda x: tj.transpose(x, (1, 0)) * 2.0, a)
    assert steps == [300]          # a.T's stride along its last axis, in elements


def test_strided_slice_and_elementwise():
    a = np.ones((8, 40), np.float32)
    _, steps = _steps(lambda x: tj.exp(x[:, ::2]) + 1.0, a)
    assert steps == [2]
    _, steps = _steps(lambda x, y: x * y, a, a)
    assert steps == [1, 1]


def test_gather_is_unknown():
    a = np.ones((8, 40), np.float32)
    idx = np.arange(12, dtype=np.int64) % 40
    ks = _loop_kernels(lambda x, i: x[:, i] * 2.0, a, idx)
    assert any(innermost_steps(k) is None for k in ks)
