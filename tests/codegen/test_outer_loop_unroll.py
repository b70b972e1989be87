"""CPU loop kernels whose outer loops are kept scalar around a vectorized innermost loop
(codegen.schedule._cpu_vector_hints) also keep those outer loops from LLVM's unroller: the
loop IR says `vector(1) no-unroll` and the LLVM module carries `llvm.loop.unroll.disable` on
them (compile time: a transformer's head transposes took ~2.5x the LLVM time with them
unrolled, for the same run time). The innermost loop is left to the unroller. Values are
checked against NumPy at nanoGPT's head-split shape, sizes 0 and 1, and a non-contiguous
input."""
import re

import numpy as np
import pytest

import tracejit as tj


def _heads(b, t, h, d):
    # nanoGPT's q.view(B, T, nh, hs).transpose(1, 2), materialized by the scale
    return tj.compile(lambda x: tj.transpose(tj.reshape(x, (b, t, h, d)), (0, 2, 1, 3)) * 0.5)


def _loop_md(llvm: str) -> dict[str, str]:
    """{loop tag: the text of its !llvm.loop metadata node's entries} of every latch with one."""
    nodes = dict(re.findall(r"^(!\d+) = (?:distinct )?!\{(.*)\}$", llvm, re.M))
    out = {}
    for tag, ref in re.findall(r"br label %(L\d+)h\d+, !llvm.loop (!\d+)", llvm):
        out[tag] = " ".join(nodes.get(p.strip(), p) for p in nodes[ref].split(","))
    return out


def test_head_transpose_outer_loops_not_unrolled():
    x = np.random.default_rng(0).standard_normal((8, 64, 128)).astype(np.float32)
    f = _heads(8, 64, 4, 32)
    low = f.lower(x)
    loops = [ln.strip() for ln in low.loops.splitlines() if ln.strip().startswith("for ")]
    assert len(loops) == 4
    assert all(ln.endswith("vector(1) no-unroll:") for ln in loops[:3]), loops
    assert "no-unroll" not in loops[3]
    md = _loop_md(low.llvm_ir)
    outer = [m for m in md.values() if "vectorize.width\", i32 1" in m]
    assert len(outer) == 3 and all("llvm.loop.unroll.disable" in m for m in outer), md
    ref = x.reshape(8, 64, 4, 32).transpose(0, 2, 1, 3) * np.float32(0.5)
    np.testing.assert_array_equal(f(x).numpy(), ref)


@pytest.mark.parametrize("shape", [(0, 3, 2, 16), (1, 1, 1, 9), (2, 5, 3, 17), (3, 7, 2, 40)])
def test_head_transpose_values(shape):
    b, t, h, d = shape
    x = np.random.default_rng(1).standard_normal((b, t, h * d)).astype(np.float32)
    out = _heads(b, t, h, d)(x).numpy()
    np.testing.assert_array_equal(out, x.reshape(shape).transpose(0, 2, 1, 3) * np.float32(0.5))


def test_head_transpose_non_contiguous_input():
    base = np.random.default_rng(2).standard_normal((4, 32, 2 * 3 * 24)).astype(np.float32)
    x = base[:, ::2, ::2]                      # [4, 16, 72], strided both ways
    out = _heads(4, 16, 3, 24)(x).numpy()
    ref = np.ascontiguousarray(x).reshape(4, 16, 3, 24).transpose(0, 2, 1, 3) * np.float32(0.5)
    np.testing.assert_array_equal(out, ref)
