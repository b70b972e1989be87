"""Regression tests for review fixes: compiled methods do not leak their instances (and work
with __slots__), clear_cache resets escape counts and output pools, the disk cache tightens
the modes of its own too-open directories."""
import copy
import gc
import os
import pickle
import stat
import warnings
import weakref

import numpy as np
import pytest

import tracejit as tj
from tracejit.runtime import buffers, cache
from tracejit.runtime import compile as tj_compile

X = np.linspace(-1, 1, 16).astype(np.float32)


class Scaler:
    def __init__(self, k):
        self.k = k

    @tj.compile
    def apply(self, x):
        return x * self.k


def test_compiled_method_does_not_keep_its_instance_alive():
    s = Scaler(2.0)
    np.testing.assert_allclose(s.apply(X).numpy(), X * 2.0)
    ref = weakref.ref(s)
    del s
    gc.collect()
    assert ref() is None


def test_compiled_method_is_cached_per_instance():
    a, b = Scaler(2.0), Scaler(3.0)
    assert a.apply is a.apply
    assert a.apply is not b.apply
    a.apply(X)
    a.apply(X)
    assert a.apply.cache_info().misses == 1 and a.apply.cache_info().hits == 1
    np.testing.assert_allclose(b.apply(X).numpy(), X * 3.0)


def test_compiled_method_survives_copy_and_pickle_of_its_instance():
    a = Scaler(2.0)
    a.apply(X)
    c = copy.deepcopy(a)
    c.k = 5.0
    assert c.apply is not a.apply
    np.testing.assert_allclose(c.apply(X).numpy(), X * 5.0)
    np.testing.assert_allclose(a.apply(X).numpy(), X * 2.0)
    p = pickle.loads(pickle.dumps(a))
    np.testing.assert_allclose(p.apply(X).numpy(), X * 2.0)


class Slotted:
    __slots__ = ("k",)

    def __init__(self, k):
        self.k = k

    @tj.compile
    def apply(self, x):
        return x * self.k


def test_compiled_method_on_a_slots_class_works():
    s = Slotted(4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(s.apply(X).numpy(), X * 4.0)
        np.testing.assert_allclose(s.apply(X).numpy(), X * 4.0)


def test_clear_cache_resets_escape_counts():
    holder = {}

    @tj.compile
    def f(x):
        holder["t"] = x * 2.0
        return x + 1.0

    def calls():
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            f(X)
            f(X)
        return [x for x in w if "every call stores tensors" in str(x.message)]

    assert len(calls()) == 1
    tj.clear_cache()
    assert len(calls()) == 1


def test_output_pool_keeps_at_most_its_byte_cap():
    pool = buffers.OutputPool(max_bytes=8 << 20)
    n = (4 << 20) // 4                         # 4 MiB of float32: pooled
    outs = [pool.empty((n + i * 1024,), np.float32) for i in range(4)]    # four sizes
    del outs
    gc.collect()
    assert 0 < pool.free_bytes() <= 8 << 20
    pool.clear()
    assert pool.free_bytes() == 0


def test_clear_cache_releases_pooled_output_blocks():
    x = np.ones(3 << 20, np.float32)           # 12 MiB output: pooled
    f = tj.compile(lambda a: a * 2.0)
    out = f(x)
    np.testing.assert_allclose(out.numpy()[:4], 2.0)
    del out
    gc.collect()
    assert sum(p.free_bytes() for p in list(buffers._POOLS)) > 0
    tj.clear_cache()
    assert sum(p.free_bytes() for p in list(buffers._POOLS)) == 0


def test_too_open_cache_dirs_of_an_older_version_are_tightened_on_store(tmp_path, monkeypatch):
    from tracejit.runtime import llvm_jit
    monkeypatch.delenv("TRACEJIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cache, "_warned", set())
    calls = []
    real = llvm_jit.optimize
    monkeypatch.setattr(llvm_jit, "optimize", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    root = tmp_path / "tracejit"
    root.mkdir()
    os.chmod(root, 0o775)                    # as an older version made it under umask 002

    def compile_and_check():
        f = tj.compile(lambda x: tj.tanh(x * 7.0) - 0.25)
        np.testing.assert_allclose(f(X).numpy(), np.tanh(X * 7.0) - 0.25, rtol=1e-6, atol=1e-6)

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        compile_and_check()
        compile_and_check()
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
    assert len(calls) == 1                   # the second compile loaded the stored entry
    # (the first load, before any store, still refused the open root once)
    assert len([w for w in record if "disk cache" in str(w.message)]) <= 1


def test_a_chosen_cache_dir_that_is_too_open_is_still_refused(tmp_path, monkeypatch):
    root = tmp_path / "shared"
    root.mkdir()
    os.chmod(root, 0o775)
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(root))
    monkeypatch.setattr(cache, "_warned", set())
    f = tj.compile(lambda x: tj.tanh(x * 9.0))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        f(X)
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o775
