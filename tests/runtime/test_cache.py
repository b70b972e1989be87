"""The disk cache: reuse across processes, detection of bad entries, concurrency, eviction."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tracejit as tj
from tracejit.runtime import cache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent("""
    import sys, time, numpy as np
    import tracejit as tj
    from tracejit.runtime import cache
    loads = []
    orig = cache.load
    cache.load = lambda k: (lambda r: (loads.append(r is not None), r)[1])(orig(k))
    f = tj.compile(lambda x: tj.tanh(x * 3.0) + tj.exp(-x))
    x = np.linspace(-1, 1, 64).astype(np.float32)
    y = f(x).numpy()
    assert np.allclose(y, np.tanh(3 * x) + np.exp(-x), atol=1e-6)
    print("HIT" if loads and all(loads) else "MISS")
""")


def _run(env):
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    env = dict(os.environ, TRACEJIT_CACHE_DIR=str(tmp_path),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path))
    return env, tmp_path


def _entries(root):
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".o")]


def test_second_process_loads_from_disk(cache_env):
    env, root = cache_env
    assert _run(env) == "MISS"
    assert len(_entries(root)) == 1
    assert _run(env) == "HIT"


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign", "empty"])
def test_damaged_entries_are_recompiled_not_loaded(cache_env, damage):
    env, root = cache_env
    _run(env)
    (path,) = _entries(root)
    data = open(path, "rb").read()
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data = data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:]
    elif damage == "foreign":
        data = b"\x7fELF" + os.urandom(200)
    else:
        data = b""
    open(path, "wb").write(data)
    assert _run(env) == "MISS"            # detected, recompiled, correct result asserted
    assert _run(env) == "HIT"             # and the entry was rewritten


def test_two_processes_compiling_at_once(cache_env):
    env, root = cache_env
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert len(_entries(root)) == 1
    assert not [f for d, _, fs in os.walk(root) for f in fs if f.endswith(".tmp")]
    assert _run(env) == "HIT"


def test_cache_key_depends_on_code_target_and_version():
    k = cache.key("module", "x86|znver4|+avx")
    assert k != cache.key("module2", "x86|znver4|+avx")
    assert k != cache.key("module", "x86|skylake|+avx")


def test_eviction_bounds_the_directory(cache_env, monkeypatch):
    _, root = cache_env
    monkeypatch.setenv("TRACEJIT_CACHE_LIMIT", "3000")
    monkeypatch.setattr(cache, "EVICT_EVERY", 1)
    for i in range(10):
        cache.store(cache.key(f"m{i}", "t"), b"x" * 1000)
    total = sum(os.path.getsize(p) for p in _entries(root))
    assert total <= 3000 and len(_entries(root)) >= 1
    assert cache.load(cache.key("m9", "t")) == b"x" * 1000     # the newest survives


def test_in_process_compile_writes_then_reuses(cache_env):
    _, root = cache_env
    f = tj.compile(lambda x: x * 2.0 + 1.0)
    x = np.ones(8, np.float32)
    assert f(x).tolist() == [3.0] * 8
    n = len(_entries(root))
    assert n >= 1
    tj.clear_cache()
    assert f(x).tolist() == [3.0] * 8
    assert len(_entries(root)) == n
