"""The numerical rules on the CUDA backend, without a GPU: column reductions and loop kernels
run on the host through the g++ harness of test_cuda_host.py (NaN propagation, sign, saturating
casts, float32 sums accumulated in float64); block-cooperative reductions are not emulated
there, so their generated source is checked for a float64 accumulator and the NaN-winning
functors are run on the host directly."""
import ctypes
import re
import shutil
import subprocess

import numpy as np
import pytest

import tracejit as tj
from test_cuda_host import SHIMS, HostBuild
from tracejit.codegen.cuda_lower import PORTABLE
from tracejit.ir.interpret import interpret

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
NAN, INF = float("nan"), float("inf")
ONES = 999


def _rule(x, axis):
    return np.asarray(np.sum(x, axis=axis, dtype=np.float64)).astype(np.float32)


def _run(fns_args, tmp_path):
    build = HostBuild()
    for fn, args in fns_args:
        assert build.add(fn, args), "expected a program the host harness can run"
    return build.run(tmp_path)


def test_column_sums_accumulate_in_float64(tmp_path):
    """Leading-axis sums (one thread per column) of 1e8 and many ones, 1e8 first, in the
    middle and last, with a fused producer and several kept axes."""
    jobs = []
    for at in (0, ONES // 2, ONES):
        x = np.ones((ONES + 1, 37), np.float32)
        x[at] = 1e8
        jobs.append((lambda a: a.sum(0), [x]))
        jobs.append((lambda a: (a * 2).sum(0), [x]))
    y = np.ones((ONES + 1, 3, 5), np.float32)
    y[0] = 1e8
    jobs.append((lambda a: a.sum(0), [y]))
    for graph, args, (got,) in _run(jobs, tmp_path):
        (want,) = interpret(graph, args)
        np.testing.assert_array_equal(got, want)
    x = np.ones((ONES + 1, 37), np.float32)
    x[0] = 1e8
    np.testing.assert_array_equal(want, _rule(y, 0))
    assert _rule(x, 0)[0] == np.float32(1e8 + ONES) != np.float32(1e8)


@pytest.mark.parametrize("fn", [lambda a: a.sum(1), lambda a: a.sum(), lambda a: a.mean(1),
                                lambda a: tj.softmax(a, -1), lambda a: tj.logsumexp(a, -1),
                                lambda a: a.sum(0)],
                         ids=["trailing", "all", "mean", "softmax", "logsumexp", "leading"])
@pytest.mark.parametrize("rows", [4, 300])
def test_every_float32_sum_kernel_accumulates_in_double(fn, rows):
    """The generated source of every kind of float32 sum (block reductions, split reductions
    with their finishing kernel, row kernels, column sums) keeps its accumulator in double."""
    src = tj.compile(fn, device="cuda").lower(np.ones((rows, 40_000), np.float32)).cuda_source
    body = src[src.find('extern "C"'):]
    summed = set(re.findall(r"(acc\w*) = (?:TjSum\(\)|\1 \+ )", body))
    assert summed
    for acc in summed:
        decl = re.findall(rf"\b(\w+) {acc} = ", body)
        assert decl and set(decl) == {"double"}, (acc, decl, body)


def test_nan_functors_of_block_reductions(tmp_path):
    """TjMax/TjMin, which the block reductions fold with, let NaN win from either side."""
    src, lib = tmp_path / "f.cpp", tmp_path / "f.so"
    src.write_text(SHIMS + PORTABLE + r"""
extern "C" void fold(const float* x, long n, float* out) {
  float hi = -INFINITY, lo = INFINITY;
  for (long i = 0; i < n; i++) { hi = TjMax()(hi, x[i]); lo = TjMin()(lo, x[i]); }
  float hi2 = -INFINITY, lo2 = INFINITY;      // operands the other way round
  for (long i = 0; i < n; i++) { hi2 = TjMax()(x[i], hi2); lo2 = TjMin()(x[i], lo2); }
  out[0] = hi; out[1] = lo; out[2] = hi2; out[3] = lo2;
}
""")
    r = subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-w", "-o", str(lib), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    fold = ctypes.CDLL(str(lib)).fold
    fold.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p]
    for x in ([1, NAN, 3], [NAN, 1, 3], [1, 3, NAN], [1, 3, 2]):
        x = np.array(x, np.float32)
        out = np.zeros(4, np.float32)
        fold(x.ctypes.data, len(x), out.ctypes.data)
        np.testing.assert_array_equal(out, [x.max(), x.min(), x.max(), x.min()])


X = np.array([NAN, -1.0, 0.0, -0.0, 2.0, 0.5, INF, -INF, 1e20, -1e20, 3.7, -3.7, 2.0 ** 40,
              2.0 ** 31, -(2.0 ** 31) - 1, 65504.0] * 2, np.float32)
Y = np.roll(X, 5)


@pytest.mark.parametrize("n", [32, 4096], ids=["scalar", "vector"])
def test_nan_sign_and_casts_in_loop_kernels(n, tmp_path):
    """relu, maximum, minimum, clip, sign, abs' and float-to-int casts on NaN, infinities and
    out-of-range values: the CUDA kernels give the interpreter's results bit for bit."""
    x, y = np.resize(X, n), np.resize(Y, n)
    jobs = [
        (lambda a, b: (tj.relu(a), tj.maximum(a, b), tj.minimum(a, b), tj.clip(a, -1.0, 1.0),
                       tj.clip(a, b, 2.0), tj.sign(a)), [x, y]),
        (lambda a: (tj.cast(a, tj.int64), tj.cast(a, tj.int32), tj.cast(a.double(), tj.int64)),
         [x]),
        (tj.grad(lambda a: tj.abs(a).sum()), [x.astype(np.float64)]),
    ]
    for graph, args, got in _run(jobs, tmp_path):
        for g, w in zip(got, interpret(graph, args)):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w, err_msg=graph.as_text())
    # and the interpreter's values are the documented ones
    (relu, _, _, _, _, sign), = [interpret(graph, args) for graph, args, _ in
                                 _run(jobs[:1], tmp_path)]
    assert np.isnan(relu[0]) and sign[0] == 0


def test_column_max_and_min_propagate_nan(tmp_path):
    x = np.arange(12.0, dtype=np.float32).reshape(4, 3)
    x[2, 0] = NAN
    x[0, 2] = NAN
    for graph, args, got in _run([(lambda a: (tj.amax(a, 0), tj.amin(a, 0)), [x])], tmp_path):
        np.testing.assert_array_equal(got[0], np.max(x, 0))
        np.testing.assert_array_equal(got[1], np.min(x, 0))
