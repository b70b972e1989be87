"""A leading-axis reduction over a long fused row expression (more than LONG_ROW_OPS arithmetic
ops: a layer-norm weight gradient that recomputes the embeddings) adds its rows one at a time,
not in balanced trees of four: the four copies of the expression were the heaviest module LLVM
compiled for a nanoGPT step. A short expression keeps the groups of four. Either way both
targets add in the same order, so the CPU's bits, the host-run CUDA kernels' bits and a NumPy
model of that order agree exactly."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from test_cuda_host import HostBuild
from tracejit.codegen.schedule_leading import LONG_ROW_OPS, leading_split


def _long(a):
    """LONG_ROW_OPS + 2 adds and multiplications by a power of two (exact, so that a fused
    multiply-add rounds as the separate ops do, and NumPy's float32 ops give the kernel's
    values)."""
    for _ in range((LONG_ROW_OPS + 2) // 2):
        a = (a + 2.0) * 0.5
    return a


def _ordered(rows: np.ndarray, width: int) -> np.ndarray:
    """The shared order in float64, rounded once: chunks (leading_split) summed on their own and
    added in chunk order; within a chunk, groups of `width` rows as balanced trees."""
    n, cols = rows.shape
    chunks, per = leading_split(n, cols)
    tot = np.zeros(cols)
    for c in range(chunks):
        part = np.zeros(cols)
        chunk = rows[c * per:(c + 1) * per].astype(np.float64)
        full = len(chunk) - len(chunk) % width
        for b in range(0, full, width):
            g = chunk[b:b + width]
            part = part + (g[0] if width == 1 else (g[0] + g[1]) + (g[2] + g[3]))
        for r in chunk[full:]:
            part = part + r
        tot = tot + part
    return tot.astype(np.float32)


def _cancelling(rows: int, cols: int) -> np.ndarray:
    x = np.random.default_rng(rows).standard_normal((rows, cols)).astype(np.float32)
    x[0, :4] = [1e20, 1.0, 1.0, -1e20]          # order-sensitive even in float64
    x[5, :4] = [-1e20, 1e20, 3.0, 1e20]
    x[6, :4] = [3.0, -1e20, 1e20, -1e20]
    return x


@pytest.mark.parametrize("rows,cols", [(37, 300), (301, 100), (4096, 64)])
def test_long_row_expression_adds_rows_one_at_a_time(rows, cols, tmp_path):
    x = _cancelling(rows, cols)
    f = lambda a: _long(a).sum(0)                              # noqa: E731
    expr = _long(x)                                             # float32, as the kernel
    cpu = tj.compile(f)(x).numpy()
    np.testing.assert_array_equal(cpu, _ordered(expr, 1))
    assert not np.array_equal(_ordered(expr, 1), _ordered(expr, 4))   # the test sees order
    build = HostBuild()
    assert build.add(f, [x])
    ((graph, args, (gpu,)),) = build.run(tmp_path)
    assert gpu.tobytes() == cpu.tobytes()


def test_short_row_expression_keeps_groups_of_four(tmp_path):
    x = _cancelling(37, 300)
    f = lambda a: ((a + 2.0) * 0.5).sum(0)                     # noqa: E731
    expr = (x + np.float32(2.0)) * np.float32(0.5)
    cpu = tj.compile(f)(x).numpy()
    np.testing.assert_array_equal(cpu, _ordered(expr, 4))
    assert not np.array_equal(_ordered(expr, 1), _ordered(expr, 4))
    build = HostBuild()
    assert build.add(f, [x])
    ((graph, args, (gpu,)),) = build.run(tmp_path)
    assert gpu.tobytes() == cpu.tobytes()


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
@pytest.mark.parametrize("rows,cols", [(37, 300), (301, 100), (4096, 64)])
def test_long_row_expression_on_the_gpu_equals_the_cpu_bit_for_bit(rows, cols):
    x = _cancelling(rows, cols)
    f = lambda a: _long(a).sum(0)                              # noqa: E731
    cpu = tj.compile(f)(x).numpy()
    gpu = tj.compile(f)(tj.tensor(x, device="cuda")).cpu().numpy()
    assert gpu.tobytes() == cpu.tobytes()
    np.testing.assert_array_equal(cpu, _ordered(_long(x), 1))
