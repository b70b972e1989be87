"""CUDA C lowering without a GPU: the generated source of a corpus of graphs (every op case,
forward and gradient, in float32, float64, float16 and bfloat16; reductions, row-wise kernels,
scatters, 64-bit indexing) compiles with `nvcc -ptx`, and has the structure each kernel kind
promises.
Skips cleanly when nvcc is not installed."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

import tracejit as tj
from cases import CASES, float_positions, make_inputs
from tracejit.codegen.cuda_lower import PRELUDE
from tracejit.codegen.cuda_program import lower_program
from tracejit.codegen.fusion import plan as make_plan
from tracejit.runtime.cuda_backend import prepare

NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")

# the 16-bit floats run the cases that take float inputs only and stay well inside float16's
# range
F16_CASES = [n for n in CASES if n not in ("cast", "pow", "cross_entropy", "matmul_batched",
                                           "matmul_vec", "matmul")]


def _inputs(specs, dtype):
    return [a if a.dtype == np.bool_ else a.astype(dtype) for a in make_inputs(specs)]


def _graphs():
    """(label, graph) for every case: forward (f32, f64, f16, bf16) and gradient (all but
    f64)."""
    out = []
    half = (np.float16, tj.bfloat16.np)
    for name, (fn, _, specs) in CASES.items():
        for dtype in (np.float32, np.float64) + (half if name in F16_CASES else ()):
            args = _inputs(specs, dtype)
            f = tj.compile(fn, device="cuda")
            out.append((f"{name}_{np.dtype(dtype).name}", f.lower(*args).graph))
            if dtype is not np.float64:
                pos = float_positions(specs)
                g = tj.grad(tj.compile(lambda *a, fn=fn: tj.sum(fn(*a)), device="cuda"),
                            argnums=tuple(pos))
                out.append((f"{name}_{np.dtype(dtype).name}_grad", g.lower(*args).graph))
    return out


def _source(graphs) -> str:
    parts = [PRELUDE]
    for i, (label, g) in enumerate(graphs):
        prog = lower_program(make_plan(prepare(g)), prefix=f"g{i}_", prelude=False)
        parts.append(f"// ===== {label}\n{prog.source}")
    return "\n".join(parts)


def _nvcc(source: str, tmp_path) -> str:
    cu = tmp_path / "corpus.cu"
    cu.write_text(source)
    r = subprocess.run([NVCC, "-ptx", "-arch=sm_90", "-o", str(tmp_path / "corpus.ptx"),
                        str(cu)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return (tmp_path / "corpus.ptx").read_text()


@needs_nvcc
def test_corpus_compiles_with_nvcc(tmp_path):
    graphs = _graphs()
    extra = [
        # a softmax backward: row kernels with several stages
        ("softmax_rows", tj.grad(tj.compile(lambda x: (tj.softmax(x, -1) * x).sum(),
                                            device="cuda")).lower(
            np.ones((64, 300), np.float32)).graph),
        # scatter-add from the gradient of a gather, with int32 indices, in 16-bit floats
        # (atomics on a float32 buffer)
        ("scatter_f16", tj.grad(tj.compile(lambda x, i: (x[i] ** 2).sum(), device="cuda")).lower(
            np.ones((5, 3), np.float16), np.array([0, 4, 0], np.int32)).graph),
        ("scatter_bf16", tj.grad(tj.compile(lambda x, i: (x[i] ** 2).sum(), device="cuda")).lower(
            np.ones((5, 3), tj.bfloat16.np), np.array([0, 4, 0], np.int32)).graph),
        # casts that round to 16 bits inside a kernel (double -> half in one rounding)
        ("casts16", tj.compile(lambda x: x.half().float() + x.bfloat16().float() + x.float(),
                               device="cuda").lower(np.ones(9)).graph),
        # integer reductions and casts
        ("int_ops", tj.compile(lambda x: (x * 3).amax(0) + tj.cast(x, tj.int32).sum(),
                               device="cuda").lower(np.ones((7, 5), np.int64)).graph),
        # W2: float32 loops of 4k elements load and store 16 bytes (4 lanes) at a time
        ("vec4", tj.grad(tj.compile(lambda x, a: (tj.tanh(x * a) * x).sum(), device="cuda"),
                         argnums=(0, 1)).lower(*[np.ones((64, 256), np.float32)] * 2).graph),
        # 16-bit in, float32 and float64 out: 8 lanes, one word in, two and four words out
        ("vec_mixed", tj.compile(lambda x: (x.float() * 2, x.double() + 1, x * x),
                                 device="cuda").lower(np.ones(4096, tj.bfloat16.np)).graph),
        # a loss-style full sum: split into partial blocks and a finishing kernel
        ("split_sum", tj.compile(lambda x: (x * x).sum(), device="cuda").lower(
            np.broadcast_to(np.float32(0), (1 << 22,))).graph),
        # more than 2**31 elements: 64-bit indexing (a broadcast view costs no memory)
        ("big", tj.compile(lambda x: tj.tanh(x) * 2, device="cuda").lower(
            np.broadcast_to(np.float32(0), (1 << 31,))).graph),
    ]
    source = _source(graphs + extra)
    ptx = _nvcc(source, tmp_path)
    n_kernels = len(re.findall(r'extern "C" __global__', source))
    assert len(re.findall(r"\.entry ", ptx)) == n_kernels > 300
    assert re.search(r"for \(long long \w+ = ", source.split("===== big")[1])
    assert "_finish(const double*" in source.split("===== split_sum")[1]
    assert "shfl.sync.down" in ptx               # warp-shuffle reductions
    assert "atom.global" in ptx                  # scatter-add atomics
    assert "cvt.f32.f16" in ptx and "cvt.rn.f16.f32" in ptx and "cvt.rn.f16.f64" in ptx
    scatter_bf16 = source.split("===== scatter_bf16")[1].split("=====")[0]
    assert "tj_atomic_add(&" in scatter_bf16 and "float* __restrict__" in scatter_bf16
    assert "tj_f2bf(" in source.split("===== casts16")[1].split("=====")[0]
    assert "ld.global.nc.v4.u32" in ptx and "st.global.v4.u32" in ptx   # 16-byte loads, stores
    mixed = source.split("===== vec_mixed")[1].split("=====")[0]
    for decl in ("uint4 u[1]; unsigned short e[8];", "uint4 u[2]; float e[8];",
                 "uint4 u[4]; double e[8];"):
        assert decl in mixed


def test_kernel_kinds_lower_to_their_shapes():
    """Each kind lowers to the CUDA structure the module docstring promises."""
    x = np.ones((8, 16), np.float32)
    f = tj.compile(lambda x: tj.softmax(x, -1) + x.sum(0), device="cuda")
    src = f.lower(x).cuda_source
    assert "tj_block_reduce<float>" in src or "tj_block_reduce<double>" in src   # rows: block
    assert re.search(r"for \(int (\w+) = blockIdx.x; \1 < 8; \1 \+= gridDim.x\)", src)  # a row each
    assert "__syncthreads();" in src
    # column sum: a thread per column, its 8 rows read at literal offsets (2 groups of 4)
    assert re.search(r"const int \w+ = 112 \+ \w+;", src)
    g = tj.compile(lambda x: x * 2 + 1, device="cuda")
    src = g.lower(x).cuda_source
    assert re.search(r"\w+ \+= \(int\)gridDim.x \* blockDim.x", src)  # grid-stride elementwise


def test_launches_cover_the_plan():
    from tracejit.runtime.cuda_backend import CudaExecutable
    a, w = np.ones((4, 8), np.float32), np.ones((8, 3), np.float32)
    f = tj.compile(lambda a, w: tj.tanh(a @ w + 1.0).sum(), device="cuda")
    exe = f.lower(a, w)._entry.exe
    assert isinstance(exe, CudaExecutable)
    kinds = [ln.kind for ln in exe.program.launches]
    assert kinds[0] == "matmul" and "kernel" in kinds
    for ln in exe.program.launches:
        if ln.kind == "kernel":
            assert ln.grid >= 1 and ln.block % 32 == 0 and ln.block <= 1024
            assert f"void __launch_bounds__({ln.block}) {ln.function}(" in exe.source


def test_cuda_dump_and_llvm_stage_errors(capsys, monkeypatch):
    monkeypatch.setenv("TRACEJIT_DUMP", "cuda")
    f = tj.compile(lambda x: tj.exp(x) - 1.0, device="cuda")
    low = f.lower(np.ones(3, np.float32))
    out = capsys.readouterr()
    assert "expf(" in out.out + out.err
    with pytest.raises(NotImplementedError, match="cuda backend has no 'llvm' stage"):
        low.llvm_ir
    cpu = tj.compile(lambda x: tj.exp(x) - 1.0).lower(np.ones(3, np.float32))
    with pytest.raises(NotImplementedError, match="device='cuda'"):
        cpu.cuda_source


def test_literals_are_exact():
    from tracejit.codegen.cuda_expr import literal
    from tracejit.ir import dtypes as dt
    assert literal(0.1, dt.f32) == float(np.float32(0.1)).hex() + "f"
    assert literal(0.1, dt.f64) == (0.1).hex()
    assert literal(float("inf"), dt.f32) == "__int_as_float(0x7f800000)"
    assert literal(float("-inf"), dt.f64) == "__longlong_as_double(0xfff0000000000000LL)"
    assert literal(-2 ** 63, dt.i64) == "(-9223372036854775807LL - 1)"
    assert literal(True, dt.bool_) == "true"


def _has_nvrtc() -> bool:
    try:
        from cupy.cuda import nvrtc
        nvrtc.getVersion()
        return True
    except Exception:         # no CuPy, or CuPy without its NVRTC library
        return False


@pytest.mark.skipif(not _has_nvrtc(), reason="CuPy's NVRTC is not installed (no GPU needed)")
def test_nvrtc_compiles_to_cubin_and_caches_it():
    from tracejit.runtime import cache
    from tracejit.runtime.cuda_backend import compile_cubin
    src = tj.grad(tj.compile(lambda x: (tj.softmax(x, -1) * x).sum(), device="cuda")).lower(
        np.ones((4, 8), np.float16)).cuda_source
    cubin = compile_cubin(src, "90")
    assert cubin[:4] == b"\x7fELF"                  # a CUBIN is an ELF image
    assert cache.directory() is not None and compile_cubin(src, "90") == cubin
