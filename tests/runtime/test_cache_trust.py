"""The disk cache is a trust boundary: a private directory, and entries loaded only when they,
their directory and the cache root belong to the user and are not group- or world-writable."""
import os
import re
import shutil
import stat
import warnings

import numpy as np
import pytest

import tracejit as tj
from tracejit.runtime import cache, llvm_jit

X = np.linspace(-1, 1, 37).astype(np.float32)
OTHER_UID = 54321


@pytest.fixture
def root(tmp_path, monkeypatch):
    d = tmp_path / "tjcache"                 # not there yet: tracejit creates it
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(d))
    monkeypatch.setattr(cache, "_warned", set(), raising=False)
    return d


@pytest.fixture
def optimized(monkeypatch):
    """Counts LLVM optimizations: 0 for a compile means the object code came from disk."""
    calls = []
    real = llvm_jit.optimize
    monkeypatch.setattr(llvm_jit, "optimize", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    return calls


def compile_and_check() -> None:
    f = tj.compile(lambda x: tj.tanh(x * 3.0) + 0.5)     # a new function: no in-memory entry
    np.testing.assert_allclose(f(X).numpy(), np.tanh(X * 3.0) + 0.5, rtol=1e-6, atol=1e-6)


def entries(d):
    return [os.path.join(p, f) for p, _, fs in os.walk(d) for f in fs if f.endswith(".o")]


def tracejit_warnings(record):
    return [w for w in record if "disk cache" in str(w.message)]


def test_cache_directory_is_created_private_and_good_entries_load(root, optimized):
    compile_and_check()
    (entry,) = entries(root)
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.dirname(entry)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(entry).st_mode) == 0o600
    assert len(optimized) == 1
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        compile_and_check()
    assert len(optimized) == 1 and not tracejit_warnings(record)     # loaded from disk


def _plant(case, root, entry):
    """Give the planted (otherwise valid) entry or its directories bad ownership or modes.
    Returns the path the warning must name and the reason's words."""
    shard = os.path.dirname(entry)
    if case == "entry group-writable":
        os.chmod(entry, 0o620)
        return entry, "writable by group or others"
    if case == "entry world-writable":
        os.chmod(entry, 0o602)
        return entry, "writable by group or others"
    if case == "directory world-writable":
        os.chmod(shard, 0o777)
        return shard, "writable by group or others"
    if case == "cache root group-writable":
        os.chmod(root, 0o770)
        return str(root), "writable by group or others"
    if case == "entry foreign owner":
        os.chown(entry, OTHER_UID, -1)
        return entry, f"belongs to uid {OTHER_UID}"
    if case == "cache root foreign owner":
        os.chown(root, OTHER_UID, -1)
        return str(root), f"belongs to uid {OTHER_UID}"
    if case == "entry is a symlink":
        target = str(root) + ".elsewhere.o"
        shutil.copy(entry, target)
        os.remove(entry)
        os.symlink(target, entry)
        return entry, "symbolic link"
    raise AssertionError(case)


CASES = ["entry group-writable", "entry world-writable", "directory world-writable",
         "cache root group-writable", "entry foreign owner", "cache root foreign owner",
         "entry is a symlink"]


@pytest.mark.parametrize("case", CASES)
def test_untrusted_entries_are_recompiled_with_one_warning(root, optimized, case):
    if "foreign" in case and os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    compile_and_check()
    (entry,) = entries(root)
    path, why = _plant(case, root, entry)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        compile_and_check()                  # correct result, compiled in memory
        compile_and_check()                  # again: no second warning for the same path
    assert len(optimized) == 3 - ("entry" in case)    # an entry is rewritten, then trusted
    (w,) = tracejit_warnings(record)
    assert issubclass(w.category, RuntimeWarning)
    assert re.search(re.escape(path) + ".*" + re.escape(why), str(w.message)), str(w.message)
    if "entry" in case:                      # replaced by a private entry of our own
        st = os.lstat(entry)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.getuid()
