"""The LLVM program artifact (codegen.llvm_program) and kernel-level compilation: identical
kernels are one module, compiled once per process (within a graph and across graphs) and
stored once on disk; results stay those of the interpreter."""
import ctypes
import os
import re

import numpy as np
import pytest

import tracejit as tj
from child_process import run_child
from conftest import assert_close
from tracejit.codegen.llvm_program import data_offset
from tracejit.runtime import llvm_jit



def _delta(before: dict) -> dict:
    now = llvm_jit.kernel_counts()
    return {k: now[k] - before[k] for k in now}


def test_identical_kernels_in_one_graph_compile_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path))

    @tj.compile
    def f(x, y):
        # two identical column reductions (same shapes, ops and constants): one kernel module
        return tj.tanh(x * 1.3579 + 0.5).sum(axis=0), tj.tanh(y * 1.3579 + 0.5).sum(axis=0)

    x, y = np.random.default_rng(0).standard_normal((2, 5, 7)).astype(np.float32)
    before = llvm_jit.kernel_counts()
    a, b = f(x, y)
    d = _delta(before)
    assert d["compiled"] == 1 and d["loaded"] == 0
    assert_close(a, np.tanh(x * 1.3579 + 0.5).sum(axis=0))
    assert_close(b, np.tanh(y * 1.3579 + 0.5).sum(axis=0))
    prog = f.lower(x, y).program
    assert "2 kernel calls of 1 distinct kernels" in prog
    syms = re.findall(r"-> (tj_[0-9a-f]+)", prog)
    assert len(syms) == 2 and syms[0] == syms[1]


def test_a_kernel_shared_by_two_graphs_is_compiled_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path))
    f = tj.compile(lambda x: tj.exp(x * 0.2468) - 1.0)
    g = tj.compile(lambda x: (tj.exp(x * 0.2468) - 1.0, x.sum()))
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    before = llvm_jit.kernel_counts()
    fx = f(x)
    assert _delta(before)["compiled"] == 1
    gx, s = g(x)             # its elementwise kernel is f's; only the sum is new
    d = _delta(before)
    assert d["compiled"] == 2 and d["reused"] == 1
    assert_close(fx, np.exp(x * 0.2468) - 1.0)
    assert_close(gx, fx.numpy(), 0, 0)
    assert_close(s, x.sum())


def _mlp_loss(params, x):
    h = x
    for w, b in params:
        h = tj.tanh(h @ w + b)
    return (h * h).mean()


@pytest.mark.parametrize("layers", [1, 4])
def test_repeated_layers_share_kernels_and_match_the_interpreter(layers):
    rng = np.random.default_rng(layers)
    params = [(rng.standard_normal((16, 16)).astype(np.float32) * 0.3,
               rng.standard_normal(16).astype(np.float32) * 0.1) for _ in range(layers)]
    x = rng.standard_normal((8, 16)).astype(np.float32)
    vg = tj.value_and_grad(tj.compile(_mlp_loss), argnums=0)
    ref = tj.value_and_grad(tj.compile(_mlp_loss, backend="interpreter"), argnums=0)
    (v, g), (rv, rg) = vg(params, x), ref(params, x)
    assert_close(v, rv.numpy(), 1e-5, 1e-6)
    for (gw, gb), (rw, rb) in zip(g, rg):
        assert_close(gw, rw.numpy(), 1e-4, 1e-6)
        assert_close(gb, rb.numpy(), 1e-4, 1e-6)
    prog = tj.compile(_mlp_loss).lower(params, x).program
    calls, distinct = map(int, re.search(r"(\d+) kernel calls of (\d+) distinct", prog).groups())
    if layers == 4:
        # the middle layers' epilogues are the same kernel: fewer modules than calls
        assert distinct < calls


def test_printed_program(monkeypatch):
    monkeypatch.setenv("TRACEJIT_NUM_THREADS", "1")

    def f(x, w):
        return tj.tanh(x @ w.T + 1.0).sum(axis=0) * 2.0
    x, w = np.ones((5, 7), np.float32), np.ones((3, 7), np.float32)
    text = re.sub(r"tj_[0-9a-f]{32}", "tj_*", tj.compile(f).lower(x, w).program)
    off = data_offset()
    assert text.splitlines() == [
        "llvm program: 5 slots (2 inputs, 0 constants, 2 intermediates, 1 new outputs per "
        "call), 2 steps, 2 kernel calls of 2 distinct kernels, 1 threads; array data at byte "
        f"{off} of the array object",
        "  slot 2 %x: input f32[5,7]",
        "  slot 3 %w: input f32[3,7]",
        "  slot 4 %1: intermediate f32[5,3]",
        "  slot 5 %6: intermediate f32[3]",
        "  slot 6 %9: output f32[3]",
        "step 0: k0 BLAS matmul(2:%x, 3:%w transpose[1, 0]) -> 4:%1",
        "step 1: native segment of 2 calls",
        "  k1 -> tj_* O2 over [0, 3) slots(4:%1, 5:%6)",
        "  k2 -> tj_* O0 over [0, 3) slots(5:%6, 6:%9)",          # tiny, within budget: O0
    ]
    assert_close(tj.compile(f)(x, w), np.tanh(x @ w.T + 1.0).sum(axis=0) * 2.0)


def test_large_kernels_are_split_across_threads(monkeypatch):
    monkeypatch.setenv("TRACEJIT_NUM_THREADS", "3")
    f = tj.compile(lambda x: tj.sin(x) * 2.0 + x)
    x = np.linspace(-3, 3, 600 * 512, dtype=np.float32).reshape(600, 512)
    text = f.lower(x).program
    assert "split across threads: [0, 200) [200, 400) [400, 600)" in text
    assert_close(f(x), np.sin(x) * 2.0 + x, 1e-6, 1e-6)


def test_data_offset_is_where_numpy_keeps_the_data_pointer():
    for a in (np.arange(5.0), np.ones((3, 4), np.int8)[:, 1:], np.zeros(7, np.float16)):
        assert ctypes.c_void_p.from_address(id(a) + data_offset()).value == a.ctypes.data


_CHILD = """
import json, sys
import numpy as np
import tracejit as tj
from tracejit.runtime import llvm_jit

def layer(h, w):
    return tj.tanh(h @ w + 0.125)

@tj.compile
def f(x, w):
    return layer(layer(layer(x, w), w), w).sum()

x = np.linspace(-1, 1, 48, dtype=np.float32).reshape(6, 8)
w = np.linspace(-0.5, 0.5, 64, dtype=np.float32).reshape(8, 8)
v = float(f(x, w).numpy())
print(json.dumps({"value": v, "counts": llvm_jit.kernel_counts(),
                  "program": f.lower(x, w).program}))
"""


def _child(cache_dir):
    return run_child(_CHILD, cache_dir)


def test_disk_cache_round_trip_in_a_new_process(tmp_path):
    first = _child(tmp_path)
    distinct = int(re.search(r"of (\d+) distinct kernels", first["program"]).group(1))
    calls = int(re.search(r"(\d+) kernel calls", first["program"]).group(1))
    assert calls > distinct          # the three layers' epilogues are one kernel
    assert first["counts"]["compiled"] == distinct and first["counts"]["loaded"] == 0
    entries = [f for _, _, fs in os.walk(tmp_path) for f in fs if f.endswith(".o")]
    assert len(entries) == distinct
    second = _child(tmp_path)
    assert second["counts"]["compiled"] == 0 and second["counts"]["loaded"] == distinct
    assert second["value"] == first["value"]


def test_kernels_compiled_in_parallel_threads_are_the_serial_ones(monkeypatch):
    """Compile threads run LLVM outside llvmlite's lock, each with its own TargetMachine and
    context: the object code must be byte for byte what one thread makes."""
    monkeypatch.setenv("TRACEJIT_COMPILE_THREADS", "4")

    def f(x, y):
        a = tj.exp(x * 0.75) + tj.sin(y)
        return a.sum(axis=0), (a * y).max(axis=1), tj.log(tj.abs(x) + 1.5) @ y.T, \
            tj.cumsum(tj.tanh(y), dim=0)
    x, y = np.random.default_rng(3).standard_normal((2, 40, 33)).astype(np.float32)
    codes = list(tj.compile(f).lower(x, y)._entry.exe.program.codes.values())
    assert len(codes) >= 3
    if llvm_jit.compile_threads() > 1:          # llvmlite's internals as expected
        assert llvm_jit._compile_all(codes) == [llvm_jit.compile_code(c) for c in codes]
    want = tj.compile(f, backend="interpreter")(x, y)
    for got, w in zip(tj.compile(f)(x, y), want):
        assert_close(got, w.numpy(), 1e-5, 1e-5)
