"""Integer pow in the CUDA lowering: the prelude's tj_ipow (square-and-multiply, PyTorch's
semantics) runs on the host through g++ and matches the interpreter and torch bit for bit,
and the source compiles with `nvcc -ptx`."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from test_cuda_host import HostBuild
from test_cuda_source import _nvcc, _source, needs_nvcc
from tracejit.ir.interpret import interpret

BASES = np.array([2, 3, -1, 0, 1, -2, 5, -1, 0, 3, -3, 7, 0, 1, -1, 2])
EXPS = np.array([3, 2, 2, 0, -5, -3, -1, -3, -1, 100, 2 ** 63 - 1, -2 ** 63, 0, 2 ** 62,
                 2 ** 62 + 1, 63])


def _operands(dtype):
    info = np.iinfo(dtype)
    return [BASES.astype(dtype), np.clip(EXPS, info.min, info.max).astype(dtype)]


def _programs():
    """(fn, args): tensor ** tensor, ** an int constant, int ** tensor, broadcast."""
    out = []
    for d in (np.int32, np.int64):
        x, y = _operands(d)
        out += [(lambda a, b: a ** b, [x, y]), (lambda a: a ** 5, [x]),
                (lambda b: 3 ** b, [y]), (lambda a, b: a.reshape(4, 1, 4) ** b[:4], [x, y])]
    return out


def test_integer_pow_kernels_run_like_the_interpreter_and_torch(tmp_path):
    torch = pytest.importorskip("torch")
    build = HostBuild()
    for fn, args in _programs():
        assert build.add(fn, args)
    results = build.run(tmp_path)
    for (fn, _), (graph, args, got) in zip(_programs(), results):
        want = fn(*[torch.tensor(a) for a in args]).numpy()
        (ref,) = interpret(graph, args)
        assert got[0].dtype == want.dtype == ref.dtype
        np.testing.assert_array_equal(got[0], ref, err_msg=graph.as_text())
        np.testing.assert_array_equal(got[0], want, err_msg=graph.as_text())


@needs_nvcc
def test_integer_pow_compiles_with_nvcc(tmp_path):
    graphs = [(f"ipow{i}", tj.compile(fn, device="cuda").lower(*args).graph)
              for i, (fn, args) in enumerate(_programs())]
    ptx = _nvcc(_source(graphs), tmp_path)
    assert ".entry" in ptx
