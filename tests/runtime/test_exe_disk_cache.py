"""The disk cache of whole CPU executables (runtime/exe_cache.py): a new process binds a graph
compiled before without planning or generating code, and computes the same numbers; anything
that changes the code misses; damaged entries warn and are rebuilt."""
import json
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

import tracejit as tj
from child_process import run_child
from tracejit.ir import dtypes
from tracejit.ir.core import Aval, Graph
from tracejit.ir.primitives import P
from tracejit.runtime import cache, exe_cache, llvm_backend, llvm_jit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CHILD = """
import json, sys
import numpy as np
import tracejit as tj
from tracejit.runtime import llvm_backend, llvm_jit

plans = []
real = llvm_backend.make_plan
llvm_backend.make_plan = lambda g: (plans.append(1), real(g))[1]

def loss(w, b, x, y):
    h = tj.tanh(x @ w + b)                      # BLAS matmul, fused epilogue
    p = tj.softmax(h * 1.7, axis=-1)            # row-wise kernels
    return ((p - y) ** 2).mean() + 0.01 * (w * w).sum()

rng = np.random.default_rng(0)
w = rng.standard_normal((12, 5)).astype(np.float32)
b = rng.standard_normal(5).astype(np.float32)
x = rng.standard_normal((9, 12)).astype(np.float32)
y = rng.standard_normal((9, 5)).astype(np.float32)
vg = tj.compile(tj.value_and_grad(loss, argnums=(0, 1)))
v, (gw, gb) = vg(w, b, x, y)
f = tj.compile(lambda x: (tj.exp(x * 0.5).sum(axis=0), x.max(axis=1), tj.cumsum(x, dim=1)))
outs = f(x)
# a compiled call with gradients: its backward is built from the optimized graph
wt = tj.tensor(w, requires_grad=True)
tape = tj.compile(loss)(wt, b, x, y)
tape.backward()
print(json.dumps({"v": float(v.numpy()), "gw": gw.numpy().tolist(), "gb": gb.numpy().tolist(),
                  "f": [o.numpy().tolist() for o in outs], "plans": len(plans),
                  "tape": [float(tape.detach().numpy()), wt.grad.numpy().tolist()],
                  "counts": llvm_jit.kernel_counts(), "program": f.lower(x).program,
                  "ir": vg.lower(w, b, x, y).as_text()}))
"""


def _child(cache_dir, **env):
    return run_child(_CHILD, cache_dir, **env)


def _reference():
    """The child's numbers from NumPy and float64 central differences."""
    rng = np.random.default_rng(0)
    w, b, x, y = (rng.standard_normal(s).astype(np.float32)
                  for s in ((12, 5), (5,), (9, 12), (9, 5)))

    def loss(w, b):
        h = np.tanh(x.astype(np.float64) @ w + b) * 1.7
        p = np.exp(h - h.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        return ((p - y) ** 2).mean() + 0.01 * (w * w).sum()
    w64, b64 = w.astype(np.float64), b.astype(np.float64)
    gw = np.zeros_like(w64)
    for i in np.ndindex(w.shape):
        d = np.zeros_like(w64)
        d[i] = 1e-6
        gw[i] = (loss(w64 + d, b64) - loss(w64 - d, b64)) / 2e-6
    return loss(w64, b64), gw, x


def test_a_new_process_hits_and_computes_the_cold_numbers(tmp_path):
    cold = _child(tmp_path)
    assert cold["plans"] >= 2 and cold["counts"]["compiled"] > 0
    assert [f for _, _, fs in os.walk(tmp_path) for f in fs if f.endswith(".x")]
    hit = _child(tmp_path)
    # nothing planned, nothing compiled: every executable came whole from the disk cache
    assert hit["plans"] == 0 and hit["counts"]["compiled"] == 0 and hit["counts"]["loaded"] > 0
    for k in ("v", "gw", "gb", "f", "tape"):
        assert hit[k] == cold[k], k                  # bit for bit the cold compile's numbers
    # .lower() describes what runs: the optimized graph (its passes skipped by the hit, run
    # when asked for) and the program
    assert hit["program"] == cold["program"] and hit["ir"] == cold["ir"]
    v, gw, x = _reference()
    np.testing.assert_allclose(hit["v"], v, rtol=1e-5)
    np.testing.assert_allclose(hit["gw"], gw, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(hit["tape"][0], v, rtol=1e-5)
    np.testing.assert_allclose(hit["tape"][1], gw, rtol=1e-3, atol=1e-5)
    s, m, c = (np.array(a, np.float32) for a in hit["f"])
    np.testing.assert_allclose(s, np.exp(x * 0.5).sum(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(m, x.max(axis=1))
    np.testing.assert_allclose(c, np.cumsum(x, axis=1), rtol=1e-5, atol=1e-6)


def test_another_thread_count_is_another_entry(tmp_path):
    _child(tmp_path, TRACEJIT_NUM_THREADS="1")
    other = _child(tmp_path, TRACEJIT_NUM_THREADS="3")
    assert other["plans"] >= 2                       # a miss: the program splits work by threads
    assert _child(tmp_path, TRACEJIT_NUM_THREADS="1")["plans"] == 0


def test_concurrent_processes_writing_the_same_entries(tmp_path):
    env = dict(os.environ, TRACEJIT_CACHE_DIR=str(tmp_path), PYTHONPATH=ROOT)
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD], env=env, cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    results = [json.loads(o[0].splitlines()[-1]) for o in outs]
    assert all(r["v"] == results[0]["v"] and r["gw"] == results[0]["gw"] for r in results)
    assert not [f for _, _, fs in os.walk(tmp_path) for f in fs if f.endswith(".tmp")]
    hit = _child(tmp_path)
    assert hit["plans"] == 0 and hit["v"] == results[0]["v"]


# -- in one process -----------------------------------------------------------------------------
@pytest.fixture
def plans(tmp_path, monkeypatch):
    """Counts fusion plans: 0 for a compile means the executable came from the disk cache."""
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache, "_warned", set())
    calls = []
    real = llvm_backend.make_plan
    monkeypatch.setattr(llvm_backend, "make_plan", lambda g: (calls.append(1), real(g))[1])
    return calls


X = np.linspace(-2, 2, 24, dtype=np.float32).reshape(4, 6)


def compile_and_check(x=X, scale=1.25):
    def fn(x):
        return tj.tanh(x * scale).sum(axis=1) + tj.exp(-x).max()
    got = tj.compile(fn)(x).numpy()          # a new CompiledFunction: nothing in memory
    want = np.tanh(x * scale).sum(axis=1) + np.exp(-x).max()
    np.testing.assert_allclose(got, want.astype(x.dtype), rtol=1e-5, atol=1e-6)


def _entries(root, ext=".x"):
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(ext)]


def test_in_process_hit_skips_planning(plans, tmp_path):
    compile_and_check()
    assert len(plans) == 1 and len(_entries(tmp_path)) == 1
    compile_and_check()
    assert len(plans) == 1


def test_a_hit_leaves_the_graph_passes_until_asked(plans):
    def fn(x):
        return (x * 1.0 + 0.0) * 3.0 + (x * 3.0)       # identities and a common subexpression
    cold = tj.compile(fn)
    np.testing.assert_allclose(cold(X).numpy(), X * 6.0, rtol=1e-6)
    text = cold.lower(X).as_text()
    hit = tj.compile(fn)
    np.testing.assert_allclose(hit(X).numpy(), X * 6.0, rtol=1e-6)
    assert len(plans) == 1
    (entry,) = hit._cache.values()
    assert entry.passes.pending                     # ran without them
    assert hit.lower(X).as_text() == text           # shown optimized, as after a cold compile
    assert not entry.passes.pending


@pytest.mark.parametrize("change", ["dtype", "shape", "constant", "threads", "memory plan",
                                    "cpu features", "llvm version", "llvmlite version",
                                    "numpy version", "tracejit version", "tracejit sources"])
def test_each_key_component_makes_a_miss(plans, tmp_path, monkeypatch, change):
    compile_and_check()
    assert len(plans) == 1
    x, scale = X, 1.25
    if change == "dtype":
        x = X.astype(np.float64)
    elif change == "shape":
        x = X.reshape(6, 4)
    elif change == "constant":
        scale = 1.2500001                           # one ulp or so away: another kernel
    elif change == "threads":
        monkeypatch.setenv("TRACEJIT_NUM_THREADS", "7")
    elif change == "memory plan":
        monkeypatch.setenv("TRACEJIT_MEMORY_PLAN", "off")
    elif change == "cpu features":
        # (a feature this CPU has turned off: the kernels' objects miss too, and are built
        # for a target that is a subset of this one, so they still run here)
        llvm_jit.target_machine()
        feats = llvm_jit._state["features"]
        monkeypatch.setitem(llvm_jit._state, "features", feats.replace("+avx2", "-avx2")
                            if "+avx2" in feats else feats + ",-avx")
    elif change == "llvm version":
        monkeypatch.setattr(exe_cache.llvm, "llvm_version_info", (1, 2, 3))
    elif change == "llvmlite version":
        monkeypatch.setattr(exe_cache.llvmlite, "__version__", "0.0.1")
    elif change == "numpy version":
        monkeypatch.setattr(exe_cache.np, "__version__", "0.0.1")
    elif change == "tracejit version":
        monkeypatch.setattr(exe_cache, "__version__", "0.0.0-other")
    elif change == "tracejit sources":
        monkeypatch.setitem(cache._HASHES, ("ir", "codegen", "runtime"), "another-tree")
    compile_and_check(x, scale)
    assert len(plans) == 2
    compile_and_check(x, scale)                     # and the new entry is a hit
    assert len(plans) == 2


def test_profiling_and_dumps_of_a_hit(plans, monkeypatch, capsys):
    """A hit's plan and program are built when asked for: the profiler's per-kernel table
    and TRACEJIT_DUMP name the kernels that run."""
    from tracejit.runtime import profiler
    compile_and_check()
    monkeypatch.setenv("TRACEJIT_PROFILE", "1")
    monkeypatch.setenv("TRACEJIT_DUMP", "kernels")
    profiler.reset()
    compile_and_check()                             # a hit, bound kernel by kernel
    assert len(plans) == 2                          # (the plan, for the names only)
    names = {e.kernel for e in profiler.entries()}
    assert names and all(n.startswith("k") for n in names)
    assert "tracejit kernels" in capsys.readouterr().err
    profiler.reset()


def test_graph_text_keeps_every_element_of_a_large_parameter():
    def graph(arr):
        g = Graph("f")
        a = g.add_input(Aval((2000,), dtypes.f32))
        c = g.emit(P.constant, [], {"value": arr})
        g.outputs = [g.emit(P.add, [a, c], {})]
        return g
    a = np.zeros(2000, np.float32)
    b = a.copy()
    b[1000] = 1.0                                   # str(array) would elide this element
    ta, tb = exe_cache.graph_text(graph(a)), exe_cache.graph_text(graph(b))
    assert ta is not None and tb is not None and ta != tb


def test_a_parameter_without_an_exact_text_is_not_cached():
    class Opaque:
        pass
    g = Graph("f")
    a = g.add_input(Aval((3,), dtypes.f32))
    g.outputs = [g.emit(P.exp, [a], {})]
    assert exe_cache.graph_text(g) is not None
    g.instrs[0].params = {"opaque": Opaque()}
    assert exe_cache.graph_text(g) is None and exe_cache.key(g, 1) is None


def test_a_primitive_registered_outside_tracejit_is_not_cached():
    from tracejit.ir.primitives import Primitive
    mine = Primitive("q_test_twice", "elementwise", lambda avals, params: avals[0],
                     lambda x: x * 2)             # rules defined here, not in tracejit
    g = Graph("f")
    a = g.add_input(Aval((3,), dtypes.f32))
    g.outputs = [g.emit(P.exp, [a], {})]
    assert exe_cache.graph_text(g) is not None
    g.outputs = [g.emit(mine, [g.outputs[0]], {})]
    assert exe_cache.graph_text(g) is None


# -- damaged entries ----------------------------------------------------------------------------
def _rewrite_payload(path, payload):
    """A well-formed entry (right header and checksum) holding `payload`."""
    import hashlib
    data = open(path, "rb").read()
    head = data[:data.index(b"\n", len(cache.MAGIC)) + 1]
    with open(path, "wb") as f:
        f.write(head + hashlib.sha256(payload).hexdigest().encode() + payload)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage pickle",
                                    "foreign object in the pickle", "wrong format"])
def test_damaged_entry_warns_and_is_rebuilt(plans, tmp_path, damage):
    compile_and_check()
    (path,) = _entries(tmp_path)
    data = open(path, "rb").read()
    if damage == "truncate":
        open(path, "wb").write(data[:len(data) // 2])
    elif damage == "flip":
        open(path, "wb").write(data[:-5] + bytes([data[-5] ^ 0x40]) + data[-4:])
    elif damage == "empty":
        open(path, "wb").write(b"")
    elif damage == "garbage pickle":
        _rewrite_payload(path, b"\x80\x05not a pickle at all")
    elif damage == "foreign object in the pickle":
        _rewrite_payload(path, pickle.dumps((exe_cache.FORMAT, _Evil(), {}), protocol=5))
    else:
        _rewrite_payload(path, pickle.dumps((b"tj-exe-0", {}, {}), protocol=5))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        compile_and_check()                          # correct, compiled again
    msgs = [str(w.message) for w in record if "disk-cache entry" in str(w.message)]
    assert len(msgs) == 1 and path in msgs[0], msgs
    assert len(plans) == 2
    compile_and_check()                              # rewritten: a hit again
    assert len(plans) == 2


def test_a_missing_kernel_entry_makes_the_executable_miss(plans, tmp_path):
    compile_and_check()
    for p in _entries(tmp_path, ".o"):
        os.remove(p)                                 # evicted kernels
    compile_and_check()
    assert len(plans) == 2 and _entries(tmp_path, ".o")
    compile_and_check()
    assert len(plans) == 2
