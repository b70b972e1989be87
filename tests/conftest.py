import gc
import os
import sys
import tempfile

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
# the test session never writes to the user's cache directory
os.environ.setdefault("TRACEJIT_CACHE_DIR", tempfile.mkdtemp(prefix="tracejit-test-cache-"))

import tracejit as tj  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_state(monkeypatch):
    for var in ("TRACEJIT_DUMP", "TRACEJIT_DUMP_DIR", "TRACEJIT_LOG", "TRACEJIT_BACKEND",
                "TRACEJIT_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    tj.manual_seed(0)
    yield


@pytest.fixture
def applied_primitives(monkeypatch):
    """The names of the primitives applied to Tensors while the test runs (every eager op
    reaches tracer.dispatch through Tensor's one call site, tensor._apply_primitive)."""
    from tracejit.tracer import tensor as tensor_mod
    seen = []
    real = tensor_mod._apply_primitive

    def counting(prim, args, params):
        seen.append(prim.name)
        return real(prim, args, params)
    monkeypatch.setattr(tensor_mod, "_apply_primitive", counting)
    return seen


def assert_close(a, b, rtol=1e-5, atol=1e-6):
    a = a.detach().numpy() if isinstance(a, tj.Tensor) else np.asarray(a)
    b = b.detach().numpy() if isinstance(b, tj.Tensor) else np.asarray(b)
    a, b = (x.astype(np.float32) if x.dtype == tj.bfloat16.np else x for x in (a, b))
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# what makes tracejit.distributed think it runs under an MPI launcher (or debug its checks)
LAUNCHER_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS",
                "TRACEJIT_DIST_DEBUG")


def _world_of_one(monkeypatch, *backend: str):
    import tracejit.distributed as dist
    for var in LAUNCHER_ENV:
        monkeypatch.delenv(var, raising=False)
    dist.init_process_group(*backend)
    yield
    dist.destroy_process_group()


@pytest.fixture
def world_of_one(monkeypatch):
    """The default process group of a plain `python` run: this process alone (no MPI)."""
    yield from _world_of_one(monkeypatch)


@pytest.fixture
def nccl_world_of_one(monkeypatch):
    """A world of one whose GPU collectives go through NCCL (needs a GPU)."""
    yield from _world_of_one(monkeypatch, "nccl")


@pytest.fixture
def fake_gpu(monkeypatch):
    """A "cuda" device through the strict CuPy stand-in (tests/fakecupy.py); returns the module."""
    import fakecupy
    from tracejit import devices
    fake = fakecupy.module()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(devices, "_cupy", None)
    return fake


@pytest.fixture
def no_gc():
    """Freed means freed by reference counting: the cycle collector is off for the test."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    yield
    if was:
        gc.enable()


@pytest.fixture
def fresh_fused_plans():
    """No eager fused-composite plan from earlier tests, none left after: a plan compiles on its
    n-th call, and a test running many programs must not move another test's calls across that
    line (interpreted and compiled results may differ in the last bit)."""
    from tracejit.tracer import fused
    fused.clear()
    yield
    fused.clear()


@pytest.fixture(params=["interpreted", "compiled"])
def tier(request, monkeypatch):
    """Eager fused-composite plans interpreted (never compiled), or compiled on their first
    call; the test gets the tier's name."""
    from tracejit.tracer import fused
    monkeypatch.setattr(fused, "COMPILE_AFTER", 0 if request.param == "interpreted" else 1)
    fused.clear()
    yield request.param
    fused.clear()
