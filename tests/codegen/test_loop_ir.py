"""The loop-level kernel IR (codegen.loops) as the one schedule (codegen.schedule) builds it:
the printed schedule of every kernel kind on both targets (pinned text), the accumulation rule,
the split of leading-axis reductions, and the `loops` stage (TRACEJIT_DUMP=loops,
`.lower(...).loops`)."""
from __future__ import annotations

import re

import numpy as np
import pytest

import tracejit as tj
from tracejit import debug
from tracejit.codegen import loops as L
from tracejit.codegen.schedule import acc_dtype, leading_split
from tracejit.ir import dtypes as dt

f32 = np.float32
CASES = {
    # elementwise: nested loops on the CPU (the outer one split across threads); a grid-stride
    # loop over the flat index on the GPU, in 16-byte lane groups when large
    "loop_cpu": (lambda x, y: x * 2 + y.T, [np.ones((3, 5), f32), np.ones((5, 3), f32)], "cpu"),
    "loop_gpu": (lambda x, y: x * 2 + y.T, [np.ones((3, 5), f32), np.ones((5, 3), f32)], "gpu"),
    "lanes_gpu": (lambda x: x - 1, [np.ones(4096, f32)], "gpu"),
    # trailing-axis reductions: serial, reassociable float64 sums on the CPU; a block per
    # output on the GPU; few long outputs in two stages
    "trailing_cpu": (lambda x: x.sum(1), [np.ones((3, 5), f32)], "cpu"),
    "trailing_gpu": (lambda x: x.sum(1), [np.ones((3, 5), f32)], "gpu"),
    "split_gpu": (lambda x: x.sum(), [np.ones(1 << 15, f32)], "gpu"),
    # leading-axis reductions: up to SHORT_ROWS rows, one pass with the rows written out per
    # column on the CPU; a thread per column (or per chunk of rows and column) on the GPU; the
    # same order of additions
    "leading_cpu": (lambda x: tj.amax(x, 0), [np.ones((6, 5), f32)], "cpu"),
    "leading_gpu": (lambda x: tj.amax(x, 0), [np.ones((6, 5), f32)], "gpu"),
    # more rows than SHORT_ROWS: column tiles of accumulators on the CPU, rows in groups of 4
    "leading_tiles_cpu": (lambda x: tj.amax(x, 0), [np.ones((20, 5), f32)], "cpu"),
    "leading_split_cpu": (lambda x: x.sum(0), [np.ones((70, 3), f32)], "cpu"),
    "leading_split_gpu": (lambda x: x.sum(0), [np.ones((70, 3), f32)], "gpu"),
    # rows (softmax): stages per row; on the GPU a block per row and barriers
    "rows_cpu": (lambda x: tj.softmax(x, -1), [np.ones((2, 3), f32)], "cpu"),
    "rows_gpu": (lambda x: tj.softmax(x, -1), [np.ones((2, 3), f32)], "gpu"),
    # scatter-add and scan
    "scatter_cpu": (tj.grad(lambda v: v[tj.tensor(np.array([0, 2, 2]))].sum()),
                    [np.ones(4, f32)], "cpu"),
    "scatter_gpu": (tj.grad(lambda v: v[tj.tensor(np.array([0, 2, 2]))].sum()),
                    [np.ones(4, f32)], "gpu"),
    "scan_cpu": (lambda x: tj.cumsum(x, 0), [np.ones((4, 3), f32)], "cpu"),
    "scan_gpu": (lambda x: tj.cumsum(x, 0), [np.ones((4, 3), f32)], "gpu"),
}

PINNED = {
    'loop_cpu': """\
k0: loop [3x5]
  kernel k0 (cpu, threads split [0, 3), i64 indices)
    loads(%y f32[5,3], %x f32[3,5]) stores(%4 f32[3,5])
    recomputed, not loaded: constant, broadcast, mul, transpose, add
    for i1 in [0, 3) parallel(cpu threads):
      for i2 in [0, 5):
        %4.flat[i1*5 + i2] = %4[i1, i2]
""",
    'loop_gpu': """\
k0: loop [3x5]
  kernel k0 (gpu, grid 1 x block 256, i32 indices)
    loads(%y f32[5,3], %x f32[3,5]) stores(%4 f32[3,5])
    recomputed, not loaded: constant, broadcast, mul, transpose, add
    for i1 in [0, 15) parallel(grid):
      [u2, u3] = unflatten(i1, [3, 5])
      %4.flat[i1] = %4[u2, u3]
""",
    'lanes_gpu': """\
k0: loop [4096]: 4 elements per thread, 16-byte words
  kernel k0 (gpu, grid 4 x block 256, i32 indices)
    loads(%x f32[4096]) stores(%2 f32[4096])
    16-byte words: %x
    recomputed, not loaded: constant, broadcast, sub
    for q1 in [0, 1024) parallel(grid):
      lanes l2 in [0, 4) (words: %x, %2):
        e3 = q1*4 + l2
        [u4] = unflatten(e3, [4096])
        %2.flat[e3] = %2[u4]
""",
    'trailing_cpu': """\
k0: reduce [3x5]
  kernel k0 (cpu, threads split [0, 3), i64 indices)
    loads(%x f32[3,5]) stores(%0 f32[3])
    for o1 in [0, 3) parallel(cpu threads):
      acc acc2: f64 sum = 0 (reassociable)
      for r3 in [0, 5):
        acc2 <- f64(%x[o1, r3])
      %0.flat[o1] = f32(acc2)
""",
    'trailing_gpu': """\
k0: reduce [3x5]: a block per output
  kernel k0 (gpu, grid 3 x block 32, i32 indices)
    loads(%x f32[3,5]) stores(%0 f32[3])
    for o1 in [0, 3) parallel(a block each):
      [u2] = unflatten(o1, [3])
      acc acc3: f64 sum = 0
      for r4 in [0, 5) parallel(block threads):
        [u5] = unflatten(r4, [5])
        acc3 <- f64(%x[u2, u5])
      acc3 = combine over the block's threads
      one thread of the block:
        %0.flat[u2] = f32(acc3)
""",
    'split_gpu': """\
k0: reduce [32768]: two-stage: 4 partial blocks per output, then a finishing kernel
  kernel k0 (gpu, grid 4 x block 256, i32 indices)
    loads(%x f32[32768]) stores(%k0_partials f64[4])
    for b1 in [0, 4) parallel(a block each):
      o2 = b1/4
      lo3 = (b1 + o2*-4)*8192
      hi4 = min(lo3 + 8192, 32768)
      [] = unflatten(o2, [])
      acc acc5: f64 sum = 0
      for r6 in [lo3, hi4) parallel(block threads):
        [u7] = unflatten(r6, [32768])
        acc5 <- f64(%x[u7])
      acc5 = combine over the block's threads
      one thread of the block:
        %k0_partials.flat[b1] = acc5
  kernel k0_finish (gpu, grid 1 x block 32, i32 indices)
    loads(%k0_partials f64[4]) stores(%0 f32[])
    for o1 in [0, 1) parallel(a block each):
      acc acc: f64 sum = 0
      for j2 in [0, 4) parallel(block threads):
        acc <- %k0_partials.flat[o1*4 + j2]
      acc = combine over the block's threads
      one thread of the block:
        %0.flat[o1] = f32(acc)
""",
    'leading_cpu': """\
k0: reduce [6x5]: serial down each column; 6 rows written out per column
  kernel k0 (cpu, threads split [0, 5), i64 indices)
    loads(%x f32[6,5]) stores(%0 f32[5])
    for o2 in [0, 5) parallel(cpu threads):
      acc acc1: f32 max = -inf
      acc1 <- max(%x[0, o2], %x[1, o2], %x[2, o2], %x[3, o2])
      acc1 <- max(%x[4, o2])
      acc1 <- max(%x[5, o2])
      %0.flat[o2] = acc1
""",
    'leading_tiles_cpu': """\
k0: reduce [20x5]: serial down each column; column tiles of 512
  kernel k0 (cpu, threads split [0, 5), i64 indices)
    loads(%x f32[20,5]) stores(%0 f32[5])
    acc tot1[512]: f32 max
    for t3 in [0, (end + begin*-1 + 511)/512):
      first4 = begin + t3*512
      n5 = min(end + first4*-1, 512)
      for j6 in [0, n5):
        tot1[j6] = identity
      for g7 in [0, 5):
        [w8] = unflatten(g7*4, [20])
        [w9] = unflatten(g7*4 + 1, [20])
        [w10] = unflatten(g7*4 + 2, [20])
        [w11] = unflatten(g7*4 + 3, [20])
        for j12 in [0, n5):
          tot1[j12] <- max(
            %x[w8, first4 + j12],
            %x[w9, first4 + j12],
            %x[w10, first4 + j12],
            %x[w11, first4 + j12])
      for j13 in [0, n5):
        %0.flat[first4 + j13] = tot1[j13]
""",
    'leading_gpu': """\
k0: reduce [6x5]: serial down each column, a thread per column
  kernel k0 (gpu, grid 1 x block 256, i32 indices)
    loads(%x f32[6,5]) stores(%0 f32[5])
    for o2 in [0, 5) parallel(grid):
      [u3] = unflatten(o2, [5])
      acc acc1: f32 max = -inf
      acc1 <- max(%x[0, u3], %x[1, u3], %x[2, u3], %x[3, u3])
      acc1 <- max(%x[4, u3])
      acc1 <- max(%x[5, u3])
      %0.flat[o2] = acc1
""",
    'leading_split_cpu': """\
k0: reduce [70x3]: two-stage: 2 chunks of 36 rows, then a finishing step; column tiles of 512
  kernel k0 (cpu, threads split [0, 3), i64 indices)
    loads(%x f32[70,3]) stores(%0 f32[3])
    acc tot1[512]: f64 sum
    acc part2[512]: f64 sum
    for t3 in [0, (end + begin*-1 + 511)/512):
      first4 = begin + t3*512
      n5 = min(end + first4*-1, 512)
      for j6 in [0, n5):
        tot1[j6] = identity
      for c7 in [0, 1):
        for j8 in [0, n5):
          part2[j8] = identity
        for g9 in [0, 9):
          [w10] = unflatten(c7*36 + g9*4, [70])
          [w11] = unflatten(c7*36 + g9*4 + 1, [70])
          [w12] = unflatten(c7*36 + g9*4 + 2, [70])
          [w13] = unflatten(c7*36 + g9*4 + 3, [70])
          for j14 in [0, n5):
            part2[j14] <- sum(
              f64(%x[w10, first4 + j14]),
              f64(%x[w11, first4 + j14]),
              f64(%x[w12, first4 + j14]),
              f64(%x[w13, first4 + j14]))
        for j15 in [0, n5):
          tot1[j15] <- part2[j15]
      for j16 in [0, n5):
        part2[j16] = identity
      for g17 in [0, 8):
        [w18] = unflatten(36 + g17*4, [70])
        [w19] = unflatten(36 + g17*4 + 1, [70])
        [w20] = unflatten(36 + g17*4 + 2, [70])
        [w21] = unflatten(36 + g17*4 + 3, [70])
        for j22 in [0, n5):
          part2[j22] <- sum(
            f64(%x[w18, first4 + j22]),
            f64(%x[w19, first4 + j22]),
            f64(%x[w20, first4 + j22]),
            f64(%x[w21, first4 + j22]))
      [w23] = unflatten(68, [70])
      for j24 in [0, n5):
        part2[j24] <- sum(f64(%x[w23, first4 + j24]))
      [w25] = unflatten(69, [70])
      for j26 in [0, n5):
        part2[j26] <- sum(f64(%x[w25, first4 + j26]))
      for j27 in [0, n5):
        tot1[j27] <- part2[j27]
      for j28 in [0, n5):
        %0.flat[first4 + j28] = f32(tot1[j28])
""",
    'leading_split_gpu': """\
k0: reduce [70x3]: two-stage: 2 chunks of 36 rows, then a finishing step
  kernel k0 (gpu, grid 1 x block 256, i32 indices)
    loads(%x f32[70,3]) stores(%k0_partials f64[6])
    for t2 in [0, 6) parallel(grid):
      [u4, u5] = unflatten(t2, [2, 3])
      [u6] = unflatten(u5, [3])
      lo3 = u4*36
      acc acc1: f64 sum = 0
      n8 = min(70 + lo3*-1, 36)
      for g7 in [0, n8/4):
        [w9] = unflatten(lo3 + g7*4, [70])
        [w10] = unflatten(lo3 + g7*4 + 1, [70])
        [w11] = unflatten(lo3 + g7*4 + 2, [70])
        [w12] = unflatten(lo3 + g7*4 + 3, [70])
        acc1 <- sum(f64(%x[w9, u6]), f64(%x[w10, u6]), f64(%x[w11, u6]), f64(%x[w12, u6]))
      s14 = lo3 + n8/4*4
      for r13 in [0, n8 + n8/4*-4):
        [w15] = unflatten(s14 + r13, [70])
        acc1 <- sum(f64(%x[w15, u6]))
      %k0_partials.flat[t2] = acc1
  kernel k0_finish (gpu, grid 1 x block 256, i32 indices)
    loads(%k0_partials f64[6]) stores(%0 f32[3])
    for o2 in [0, 3) parallel(grid):
      acc acc1: f64 sum = 0
      for c3 in [0, 2):
        acc1 <- %k0_partials.flat[c3*3 + o2]
      %0.flat[o2] = f32(acc1)
""",
    'rows_cpu': """\
k0: rows [2x3]
  kernel k0 (cpu, threads split [0, 2), i64 indices)
    loads(%x f32[2,3], %0 f32[2], %11 f32[2]) stores(%0 f32[2], %11 f32[2], %15 f32[2,3])
    recomputed, not loaded: reshape, constant, broadcast, eq, where, sub, exp, reciprocal, mul
    for o1 in [0, 2) parallel(cpu threads):
      acc acc2: f32 max = -inf
      for r3 in [0, 3):
        acc2 <- %x[o1, r3]
      %0.flat[o1] = acc2
      acc acc4: f64 sum = 0 (reassociable)
      for r5 in [0, 3):
        acc4 <- f64(%10[o1, r5])
      %11.flat[o1] = f32(acc4)
      computing %15 (not loaded):
        for c6 in [0, 3):
          %15.flat[o1*3 + c6] = %15[o1, c6]
""",
    'rows_gpu': """\
k0: rows [2x3]: a block per row; stages separated by barriers
  kernel k0 (gpu, grid 2 x block 32, i32 indices)
    loads(%x f32[2,3], %0 f32[2], %11 f32[2]) stores(%0 f32[2], %11 f32[2], %15 f32[2,3])
    recomputed, not loaded: reshape, constant, broadcast, eq, where, sub, exp, reciprocal, mul
    for r1 in [0, 2) parallel(a block each):
      [u2] = unflatten(r1, [2])
      acc acc3: f32 max = -inf
      for r4 in [0, 3) parallel(block threads):
        [u5] = unflatten(r4, [3])
        acc3 <- %x[u2, u5]
      acc3 = combine over the block's threads
      one thread of the block:
        %0.flat[u2] = acc3
      barrier (block)
      acc acc6: f64 sum = 0
      for r7 in [0, 3) parallel(block threads):
        [u8] = unflatten(r7, [3])
        acc6 <- f64(%10[u2, u8])
      acc6 = combine over the block's threads
      one thread of the block:
        %11.flat[u2] = f32(acc6)
      barrier (block)
      computing %15 (not loaded):
        for c9 in [0, 3) parallel(block threads):
          [u10] = unflatten(c9, [3])
          %15.flat[u2*3 + u10] = %15[u2, u10]
      barrier (block)
""",
    'scatter_cpu': """\
k0: scatter [4]
  kernel k0 (cpu, threads split [0, 1), i64 indices)
    loads(%0 i64[3]) stores(%3 f32[4])
    recomputed, not loaded: constant, broadcast
    for i1 in [0, 4):
      %3.flat[i1] = 0:f32
    for i2 in [0, 3):
      %3.flat[wrap(%0[i2], 4)] += %2[i2]
""",
    'scatter_gpu': """\
k0: scatter [4]: zero fill, then atomic adds
  kernel k0_zero (gpu, grid 1 x block 256, i32 indices)
    loads() stores(%3 f32[4])
    for i1 in [0, 4) parallel(grid):
      %3.flat[i1] = 0:f32
  kernel k0 (gpu, grid 1 x block 256, i32 indices)
    loads(%0 i64[3]) stores(%3 f32[4])
    recomputed, not loaded: constant, broadcast
    for e2 in [0, 3) parallel(grid):
      [u3] = unflatten(e2, [3])
      %3.flat[wrap(%0[u3], 4)] += %2[u3]
""",
    'scan_cpu': """\
k0: scan [4x3]
  kernel k0 (cpu, threads split [0, 3), i64 indices)
    loads(%x f32[4,3]) stores(%0 f32[4,3])
    for o1 in [0, 3) parallel(cpu threads):
      acc acc: f64 sum = 0
      for r2 in [0, 4):
        k3 = r2
        acc <- f64(%x[k3, o1])
        %0.flat[k3*3 + o1] = f32(acc)
""",
    'scan_gpu': """\
k0: scan [4x3]: a thread per row
  kernel k0 (gpu, grid 1 x block 256, i32 indices)
    loads(%x f32[4,3]) stores(%0 f32[4,3])
    for i1 in [0, 3) parallel(grid):
      [u2] = unflatten(i1, [3])
      acc acc: f64 sum = 0
      for r3 in [0, 4):
        k4 = r3
        acc <- f64(%x[k4, u2])
        %0.flat[k4*3 + u2] = f32(acc)
""",
}


@pytest.mark.parametrize("name", list(CASES))
def test_printed_schedule_of_every_kernel_kind(name):
    fn, args, target = CASES[name]
    low = tj.compile(fn, device="cuda" if target == "gpu" else "cpu").lower(*args)
    assert low.loops + "\n" == PINNED[name]


def test_loops_dump_stage(capsys, monkeypatch):
    assert "loops" in debug.STAGES
    monkeypatch.setenv("TRACEJIT_DUMP", "loops")
    x = np.ones((6, 5), f32)
    tj.compile(lambda x: tj.amax(x, 0)).lower(x)
    err = capsys.readouterr().err
    assert "===== tracejit loops:" in err and PINNED["leading_cpu"] in err + "\n"
    tj.compile(lambda x: tj.amax(x, 0), device="cuda").lower(x)
    assert PINNED["leading_gpu"] in capsys.readouterr().err + "\n"


def test_the_accumulation_rule():
    """One rule for both targets: float sums in float64, integer sums in their own type,
    max/min in the compute type (bool max/min in int32, which warp shuffles can move)."""
    assert acc_dtype("sum", dt.f32) is dt.f64 and acc_dtype("sum", dt.f64) is dt.f64
    assert acc_dtype("sum", dt.i32) is dt.i32 and acc_dtype("sum", dt.i64) is dt.i64
    assert acc_dtype("max", dt.bf16) is dt.f32 and acc_dtype("min", dt.f64) is dt.f64
    assert acc_dtype("max", dt.bool_) is dt.i32
    for target in ("cpu", "gpu"):
        text = tj.compile(lambda a: (a.sum(0), a.sum(1), tj.cumsum(a, 0)),
                          device="cuda" if target == "gpu" else "cpu").lower(
            np.ones((300, 700), f32)).loops
        accs = re.findall(r"^ *acc \w+(?:\[\d+\])?: (\w+) ", text, re.M)
        assert accs and set(accs) == {"f64"}, text


def test_leading_split_is_a_function_of_the_shape():
    assert leading_split(4096, 512) == (128, 32)        # [16, 256, 512].sum((0, 1))
    assert leading_split(63, 5) == (1, 63)              # too few rows to split
    assert leading_split(10 ** 6, 1 << 16) == (1, 10 ** 6)    # enough columns already
    chunks, per = leading_split(300, 700)
    assert per % 4 == 0 and (chunks - 1) * per < 300 <= chunks * per
    for rows, cols in [(64, 1), (1000, 37), (4097, 3), (123457, 9)]:
        chunks, per = leading_split(rows, cols)
        assert chunks >= 2 and (chunks - 1) * per < rows <= chunks * per


def test_leading_reduction_of_a_layer_norm_gradient_runs_on_65536_gpu_threads():
    """x.sum((0, 1)) over [16, 256, 512]: 512 outputs, 128 x 512 partial sums in parallel."""
    x = np.ones((16, 256, 512), f32)
    prog = tj.compile(lambda a: a.sum((0, 1)), device="cuda").lower(x)._entry.exe.program
    first, finish = prog.launches
    assert (first.grid, first.block) == (256, 256) and (finish.grid, finish.block) == (2, 256)


def test_format_of_index_expressions():
    i, j = L.Var("i"), L.Var("j")
    assert str(L.add(L.mul(L.add(i, j), 4), L.Lit(0))) == "(i + j)*4"
    assert str(L.linear([i, j], (3, 5))) == "i*5 + j"
    assert str(L.Min(L.Div(i, 2), L.Lit(7))) == "min(i/2, 7)"
    assert L.add(L.Lit(2), L.Lit(3)) == L.Lit(5) and L.mul(i, 0) == L.Lit(0)


def test_few_columns_split_rows_across_cpu_threads():
    """A column sum with few columns (a bias gradient of a narrow layer) splits its rows across
    CPU threads: partial sums per chunk into a scratch buffer, then a finishing kernel; the
    result is the float64 sum rounded once."""
    x = np.random.default_rng(5).standard_normal((100_000, 3)).astype(f32)
    f = tj.compile(lambda a: (a * 2).sum(0))
    low = f.lower(x)
    first, finish = [ln for ln in low.loops.splitlines() if ln.startswith("  kernel ")]
    assert first == "  kernel k0 (cpu, threads split [0, 3125), i64 indices)"
    assert finish == "  kernel k0_finish (cpu, threads split [0, 3), i64 indices)"
    assert "%k0_partials: intermediate f64[9375]" in low.program
    np.testing.assert_allclose(f(x).numpy(), (x.astype(np.float64) * 2).sum(0), rtol=1e-7)
