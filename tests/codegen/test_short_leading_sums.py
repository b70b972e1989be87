"""Leading-axis reductions of at most SHORT_ROWS rows (col2im's kH*kW taps, small-batch bias
gradients): the rows are written out with literal indices, on the CPU in one vectorized pass
with a scalar accumulator per column. The order of additions is the one both targets share
(groups of four rows as balanced trees, added in turn to the accumulator), so the CPU's bits,
the host-run CUDA kernel's bits and a NumPy model of that order agree exactly."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from test_cuda_host import HostBuild
from tracejit.codegen.schedule_leading import SHORT_ROWS


def _ordered_sum(x: np.ndarray) -> np.ndarray:
    """The shared order, in float64, rounded once: acc += ((r0 + r1) + (r2 + r3)) per group
    of four, then the remaining rows one by one."""
    rows = x.reshape(x.shape[0], -1).astype(np.float64)
    acc = np.zeros(rows.shape[1])
    full = len(rows) - len(rows) % 4
    for b in range(0, full, 4):
        acc = acc + ((rows[b] + rows[b + 1]) + (rows[b + 2] + rows[b + 3]))
    for r in rows[full:]:
        acc = acc + r
    return acc.astype(np.float32).reshape(x.shape[1:])


def _cancelling(rows: int, cols: int) -> np.ndarray:
    x = np.random.default_rng(rows).standard_normal((rows, cols)).astype(np.float32)
    x[:, :4] = 1.0
    x[0, :4] = [1e8, 1.0, 1.0, -1e8]            # order-sensitive columns
    x[min(5, rows - 1), :4] = [-1e8, 1e8, 3.0, 1e8]
    return x


@pytest.mark.parametrize("rows", [1, 3, 4, 6, 9, SHORT_ROWS])
def test_short_leading_sums_follow_the_shared_order(rows, tmp_path):
    x = _cancelling(rows, 1000)
    cpu = tj.compile(lambda a: a.sum(0))(x).numpy()
    np.testing.assert_array_equal(cpu, _ordered_sum(x))
    loops = tj.compile(lambda a: a.sum(0)).lower(x).loops
    assert f"{rows} rows written out per column" in loops
    build = HostBuild()
    assert build.add(lambda a: a.sum(0), [x])
    ((graph, args, (gpu,)),) = build.run(tmp_path)
    assert gpu.tobytes() == cpu.tobytes()


def test_short_leading_max_and_kept_axes():
    x = np.random.default_rng(1).standard_normal((5, 3, 40)).astype(np.float32)
    x[2, 1, 7] = np.nan
    got = tj.compile(lambda a: (tj.amax(a, 0), a.sum((0, 1))))(x)
    np.testing.assert_array_equal(got[0].numpy(), np.max(x, 0))
    np.testing.assert_array_equal(got[1].numpy(), _ordered_sum(x.reshape(15, 40)))


def test_more_rows_keep_the_column_tiles():
    x = _cancelling(SHORT_ROWS + 1, 100)
    loops = tj.compile(lambda a: a.sum(0)).lower(x).loops
    assert "column tiles" in loops
    np.testing.assert_array_equal(tj.compile(lambda a: a.sum(0))(x).numpy(), _ordered_sum(x))
