"""The disk cache of whole CUDA executables (runtime/cuda_exe_cache.py), on the strict fake CuPy
(tests/fakecupy.py) with host stand-ins for the kernels (fake_cuda_program.py): a hit builds
no fusion plan, schedule or source, makes bit for bit the same launches and results (also
replayed from a CUDA graph), every key component changed is a miss, and a damaged entry warns
and is rebuilt. Real CUDA: tests/runtime/test_cuda_exe_cache_gpu.py."""
import os
import pickle
import types
import warnings

import numpy as np
import pytest

import fakecupy
import fake_cuda_program
import tracejit as tj
from tracejit.runtime import cache, cuda_backend, cuda_exe_cache
from tracejit.runtime.cuda_graphs import CudaGraphExecutable

NVRTC = {"version": (13, 0)}


@pytest.fixture
def gpu(fake_gpu, monkeypatch, tmp_path):
    """The fake GPU, a fresh cache directory, NVRTC's version to ask, and counts of the plans
    and CUDA programs built (0 and 0 for a compile: the executable came from the disk)."""
    fake_cuda_program.install(monkeypatch)
    monkeypatch.setattr(fake_gpu.cuda, "nvrtc",
                        types.SimpleNamespace(getVersion=lambda: NVRTC["version"]), raising=False)
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache, "_warned", set())
    counts = {"plans": 0, "lowered": 0}
    real_plan, real_lower = cuda_backend.make_plan, cuda_backend.lower_program

    def plan(g):
        counts["plans"] += 1
        return real_plan(g)

    def lower(p, *a, **k):
        counts["lowered"] += 1
        return real_lower(p, *a, **k)
    monkeypatch.setattr(cuda_backend, "make_plan", plan)
    monkeypatch.setattr(cuda_backend, "lower_program", lower)
    return counts


def _step(x, w, b, idx, scale):
    h = tj.tanh(x @ w + b) * scale              # cuBLAS matmul, fused epilogue
    p = tj.softmax(h, axis=-1)                  # row-wise kernels
    cols = tj.argsort(h, dim=-1)                # an extern step (CuPy's argsort)
    g = h[idx]                                  # a gather with an index constant
    mask = np.array([1.0, 0.0, 2.0, 1.0], np.float32)      # an array constant
    return (p * mask).sum(axis=0), cols, g.max(), x.T @ h


RNG = np.random.default_rng(0)
X = RNG.standard_normal((5, 8)).astype(np.float32)
W = RNG.standard_normal((8, 4)).astype(np.float32)
B = RNG.standard_normal(4).astype(np.float32)
IDX = np.array([4, 0, 2])


def _capturable(x, w, b, idx, scale):
    """_step without its extern step, which a CUDA graph cannot capture."""
    h = tj.tanh(x @ w + b) * scale
    return (tj.softmax(h, axis=-1) * 2.0).sum(axis=0), h[idx].max(), x.T @ h


def _call(mode=None, x=X, w=W, b=B):
    f = tj.compile(_step if mode is None else _capturable, mode=mode)
    dev = lambda a: tj.tensor(a, device="cuda")                 # noqa: E731
    args = (dev(x), dev(w), b, IDX, 0.75)
    return f, [o.cpu().numpy() for o in f(*args)], args


def _want(x=X, w=W, b=B, fn=_step):
    return [o.numpy() for o in tj.compile(fn, backend="interpreter")(x, w, b, IDX, 0.75)]


def _launches():
    return [e for e in fakecupy.LOG if e[0] in ("kernel", "gemm", "copy")]


def _entries(root, ext=cuda_exe_cache.EXT):
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(ext)]


def _same(got, want, exact=True):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if exact:
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_a_hit_builds_nothing_and_launches_the_same(gpu, tmp_path):
    fakecupy.LOG.clear()
    f, cold, args = _call()
    cold_log = _launches()
    assert gpu == {"plans": 1, "lowered": 1} and len(_entries(tmp_path)) == 1
    _same(cold, _want(), exact=False)
    fakecupy.LOG.clear()
    hit_f, hit, hit_args = _call()
    assert gpu == {"plans": 1, "lowered": 1}        # no plan, no schedule, no source
    assert _launches() == cold_log                  # the same launches, grids and blocks
    _same(hit, cold)                                # bit for bit
    exe = hit_f.lower(*hit_args)._entry.exe
    assert exe.cached
    # .lower()'s texts of a hit: built when asked, the same as the cold compile's
    cold_low, hit_low = f.lower(*args), hit_f.lower(*hit_args)
    assert hit_low.cuda_source == cold_low.cuda_source
    assert gpu["lowered"] == 1                      # the source came from the entry
    assert hit_low.kernels == cold_low.kernels and hit_low.memory == cold_low.memory
    assert gpu == {"plans": 2, "lowered": 2}


def test_a_hit_replays_from_a_cuda_graph(gpu):
    f, cold, args = _call("reduce-overhead")
    exe = f.lower(*args)._entry.exe
    assert isinstance(exe, CudaGraphExecutable) and not exe.cached
    hit_f, hit, hit_args = _call("reduce-overhead")
    exe = hit_f.lower(*hit_args)._entry.exe
    assert isinstance(exe, CudaGraphExecutable) and exe.cached
    assert gpu == {"plans": 1, "lowered": 1}
    _same(hit, cold)
    # later steps (new host inputs) replay the graph the hit recorded
    for k in range(2):
        b = B + k
        outs = [o.cpu().numpy() for o in hit_f(*hit_args[:2], b, IDX, 0.75)]
        _same(outs, _want(b=b, fn=_capturable), exact=False)
    assert exe.stats["captures"] == 1 and exe.stats["replays"] == 2


@pytest.mark.parametrize("change", ["arch", "nvrtc", "dtype", "shape", "memory plan",
                                    "tracejit sources", "constant"])
def test_each_key_component_makes_a_miss(gpu, monkeypatch, change):
    _call()
    assert gpu["plans"] == 1
    x, w, b = X, W, B
    if change == "arch":
        monkeypatch.setattr(fakecupy._Device, "compute_capability", "80")
    elif change == "nvrtc":
        monkeypatch.setitem(NVRTC, "version", (13, 1))
    elif change == "dtype":                         # (float64 matmuls are cupy.matmul's)
        f = tj.compile(lambda x: (tj.exp(x) * 2.5).sum(axis=0))
        for dt in (np.float32, np.float64, np.float64):
            got = f(tj.tensor(X.astype(dt), device="cuda")).cpu().numpy()
            assert got.dtype == dt
            np.testing.assert_allclose(got, (np.exp(X.astype(dt)) * 2.5).sum(0), rtol=1e-5)
        assert gpu["plans"] == 3
        return
    elif change == "shape":
        x = np.concatenate([X, X])
    elif change == "memory plan":
        monkeypatch.setenv("TRACEJIT_MEMORY_PLAN", "off")
    elif change == "tracejit sources":
        real = cache.code_hash
        monkeypatch.setattr(cache, "code_hash", lambda subs: real(subs) + "+edited")
    if change == "constant":
        f = tj.compile(lambda x: (x * 2.5).sum())
        g = tj.compile(lambda x: (x * 3.5).sum())
        xs = tj.tensor(X, device="cuda")
        assert float(f(xs).cpu().numpy()) == pytest.approx(float((X * 2.5).sum()), rel=1e-5)
        assert float(g(xs).cpu().numpy()) == pytest.approx(float((X * 3.5).sum()), rel=1e-5)
        assert gpu["plans"] == 3
        return
    _, got, _ = _call(x=x, w=w, b=b)
    assert gpu["plans"] == 2                         # a miss: planned again
    _same(got, _want(x, w, b), exact=False)
    _call(x=x, w=w, b=b)
    assert gpu["plans"] == 2                         # and stored: a hit now


def test_without_a_device_to_ask_nothing_is_cached_whole(gpu, monkeypatch, tmp_path):
    import sys
    monkeypatch.setattr(sys.modules["cupy"].cuda, "nvrtc", None)    # no NVRTC to ask
    _call()
    _, got, _ = _call()
    assert gpu["plans"] == 2 and not _entries(tmp_path)
    _same(got, _want(), exact=False)


def _rewrite_payload(path, payload):
    """A well-formed entry (right header and checksum) holding `payload`."""
    import hashlib
    data = open(path, "rb").read()
    head = data[:data.index(b"\n", len(cache.MAGIC)) + 1]
    with open(path, "wb") as f:
        f.write(head + hashlib.sha256(payload).hexdigest().encode() + payload)


@pytest.mark.parametrize("damage", ["flip", "garbage pickle", "foreign object",
                                    "wrong format", "slot out of range"])
def test_damaged_entry_warns_and_is_rebuilt(gpu, tmp_path, damage):
    _call()
    (path,) = _entries(tmp_path)
    data = open(path, "rb").read()
    if damage == "flip":
        open(path, "wb").write(data[:-5] + bytes([data[-5] ^ 0x40]) + data[-4:])
    elif damage == "garbage pickle":
        _rewrite_payload(path, b"\x80\x05not a pickle at all")
    elif damage == "foreign object":
        _rewrite_payload(path, pickle.dumps((cuda_exe_cache.FORMAT, {"x": os.system}), 5))
    elif damage == "wrong format":
        _rewrite_payload(path, pickle.dumps((b"tj-cuda-exe-0", {}), protocol=5))
    else:
        fmt, fields = pickle.loads(data[data.index(b"\n", len(cache.MAGIC)) + 65:])
        fields["inputs"] = [len(fields["avals"]) + 7] + fields["inputs"][1:]
        _rewrite_payload(path, pickle.dumps((fmt, fields), protocol=5))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _, got, _ = _call()                          # correct, compiled again
    msgs = [str(w.message) for w in record if "disk-cache entry" in str(w.message)]
    assert len(msgs) == 1 and path in msgs[0], msgs
    assert gpu["plans"] == 2
    _same(got, _want(), exact=False)
    _call()                                          # rewritten: a hit again
    assert gpu["plans"] == 2


def test_a_hit_of_an_earlier_process_runs_on_the_fake(gpu, tmp_path):
    """(The fake's kernel stand-ins of a hit whose source this process never rendered: built
    from the executable's plan and program, as a later test session sharing a cache finds.)"""
    _, cold, _ = _call()
    fakecupy.KERNELS.clear()
    _, hit, _ = _call()
    _same(hit, cold)


def test_a_compiled_gradient_hits_without_its_reverse_mode_graph(gpu, monkeypatch):
    """tj.grad of a compiled function on the GPU: keyed by the primal graph and the transform
    (runtime/grad_trace.py), so a hit builds neither the reverse-mode graph nor a plan."""
    from tracejit.runtime import grad_trace
    built = []
    real = grad_trace.vjp_graph
    monkeypatch.setattr(grad_trace, "vjp_graph", lambda *a, **k: (built.append(1),
                                                                   real(*a, **k))[1])

    def loss(w, x):
        return (tj.tanh(x @ w) ** 2).sum()
    wc, xc = tj.tensor(W, device="cuda"), tj.tensor(X, device="cuda")
    cold = tj.grad(tj.compile(loss))(wc, xc).cpu().numpy()
    assert built == [1] and gpu["plans"] == 1
    hit = tj.grad(tj.compile(loss))(wc, xc).cpu().numpy()
    assert built == [1] and gpu["plans"] == 1
    np.testing.assert_array_equal(hit, cold)
    h = np.tanh(X.astype(np.float64) @ W)
    np.testing.assert_allclose(hit, X.T @ (2 * h * (1 - h * h)), rtol=1e-4, atol=1e-5)
