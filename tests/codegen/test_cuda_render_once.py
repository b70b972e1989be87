"""The CUDA program renders each structural kernel once (codegen/cuda_program.py): plan kernels
with one structural key (codegen/kernel_key.py) launch the same CUDA functions with their own
buffers, the translation unit defines each function once, and a later program with the same
kernels renders nothing again. The shared code is run on the host (g++, as
tests/codegen/test_cuda_host.py does) against the reference interpreter, with every
intermediate in one poisoned arena, so a launch handed another kernel's buffers shows."""
from __future__ import annotations

import re
import shutil
import warnings

import numpy as np
import pytest

import tracejit as tj
from test_cuda_host import run_in_one_arena
from tracejit.codegen import cuda_program
from tracejit.codegen.cuda_program import lower_program
from tracejit.codegen.fusion import plan as make_plan
from tracejit.ir.interpret import interpret
from tracejit.runtime.cuda_backend import prepare


def layers(x, *ws):
    """Identical layers: a column mean (a reduce kernel) and a loop kernel each, every layer's
    output materialized (it is returned)."""
    outs = []
    for w in ws:
        x = tj.exp(x * w).mean(axis=0, keepdims=True) * x
        outs.append(x)
    return outs


def _args(depth: int, rows: int = 300, cols: int = 70) -> list[np.ndarray]:
    rng = np.random.default_rng(depth)
    return [rng.standard_normal((rows, cols)) * 0.3] + \
        [rng.standard_normal(cols) * 0.3 for _ in range(depth)]


def _lower(fn, args, **kw):
    graph = prepare(tj.compile(fn).lower(*[tj.tensor(a) for a in args]).graph)
    plan = make_plan(graph)
    return graph, plan, lower_program(plan, prelude=False, **kw)


def _functions(source: str) -> list[str]:
    return re.findall(r'__global__ void __launch_bounds__\(\d+\) (\w+)\(', source)


@pytest.fixture
def empty_table(monkeypatch):
    """No structural kernel rendered by an earlier test, and renders counted."""
    monkeypatch.setattr(cuda_program, "_RENDERED", {})
    count = [0]
    real = cuda_program.render

    def render(lk):
        count[0] += 1
        return real(lk)
    monkeypatch.setattr(cuda_program, "render", render)
    return count


def test_each_structural_kernel_is_one_function(empty_table):
    functions = {}
    for depth in (1, 2, 6):
        _, plan, prog = _lower(layers, _args(depth))
        names = _functions(prog.source)
        assert len(names) == len(set(names))                      # each defined once
        kernels = [ln for ln in prog.launches if ln.kind == "kernel"]
        assert {ln.function for ln in kernels} == set(names)
        functions[depth] = len(names)
        # launches keep their own kernel's name and buffers
        assert len({ln.name for ln in kernels}) == len(kernels)
        by_fn = {}
        for ln in kernels:
            by_fn.setdefault(ln.function, []).append(ln)
        if depth == 6:
            shared = [lns for lns in by_fn.values() if len(lns) == 6]
            assert shared, "each layer's kernels share their functions"
            for lns in shared:
                assert len({tuple(map(id, ln.args)) for ln in lns}) == 6
    assert functions[1] == functions[2] == functions[6]
    assert empty_table[0] == functions[1]          # rendered once, for the first program


def test_a_later_program_renders_only_new_kernels(empty_table):
    _lower(layers, _args(3))
    first = empty_table[0]
    assert first > 0
    _, _, prog = _lower(layers, _args(5))                  # the same kernels, two more times
    assert empty_table[0] == first
    assert "__global__" in prog.source                     # its own translation unit has them
    _lower(lambda x, w: tj.tanh(x * w + 1.0), _args(1))     # a new kernel: rendered
    assert empty_table[0] > first


def test_checking_keys_renders_everything_and_agrees(empty_table):
    _, _, prog = _lower(layers, _args(4), check_keys=True)
    kernels = [ln for ln in prog.launches if ln.kind == "kernel"]
    assert empty_table[0] == len(kernels)
    assert len(_functions(prog.source)) < len(kernels)


def test_a_split_reduction_per_layer_gets_its_own_scratch(empty_table):
    """Layers whose column means split in two stages (partials, then a finishing kernel): the
    layers share both functions, and each gets scratch buffers of its own."""
    graph, plan, prog = _lower(layers, _args(3, rows=4096, cols=8))
    finish = [ln for ln in prog.launches if ln.name.endswith("_finish")]
    assert len(finish) == 3 and len({ln.function for ln in finish}) == 1
    assert len(prog.scratch) == 3 and len(set(map(id, prog.scratch))) == 3
    for ln, s in zip(finish, prog.scratch):
        assert s in ln.args


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
@pytest.mark.parametrize("shape", [(300, 70), (4096, 8), (1, 5), (0, 3)],
                         ids=["serial", "split", "one_row", "empty"])
def test_shared_functions_compute_each_layer_on_the_host(shape, empty_table, tmp_path):
    args = _args(4, *shape)
    graph, plan, prog = _lower(layers, args)
    assert all(ln.kind == "kernel" for ln in prog.launches)
    assert not any(t in prog.source for t in ("tj_block_reduce", "__syncthreads", "__shfl"))
    got = run_in_one_arena(graph, plan, prog, args, tmp_path)
    want = interpret(graph, args)
    for g, w, w_np in zip(got, want, _numpy_layers(args)):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g, w_np, rtol=1e-10, atol=1e-12)


def _numpy_layers(args: list[np.ndarray]) -> list[np.ndarray]:
    x, outs = args[0], []
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)   # the mean of no rows: NaN, as compiled
        for w in args[1:]:
            x = np.exp(x * w).mean(axis=0, keepdims=True) * x
            outs.append(x)
    return outs
