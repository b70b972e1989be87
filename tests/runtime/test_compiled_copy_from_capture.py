"""`x.copy_(c)` / `x.fill_(c)` inside a compiled function, `c` a captured tensor (or NumPy
array) of x's shape and dtype: each call reads c's value at that call, as torch eagerly does.
Before, the op's new value was c itself, not a traced read of it, so its value when traced
became a constant of the graph: after c changed in place, the cache hit returned the old value
silently (compiled fuzzer seed 3309). Also eagerly: `x.fill_(v)`, v a 0-d tensor that
requires grad, gives v its gradient (it was dropped)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tracejit as tj

OLD, NEW = -0.287, 1.116


def _caps(lib) -> dict:
    return {"s": lib.tensor(np.full((), OLD)), "v": lib.tensor(np.full((2,), OLD))}


BODIES = {
    # x made inside the function (an eager tensor of the trace), 0-d and 1-d
    "new_0d": lambda L, c, a: L.tensor(np.full((), 0.5)).copy_(c["s"]),
    "new_1d": lambda L, c, a: L.tensor(np.zeros(2)).copy_(c["v"]),
    # x a traced value
    "traced": lambda L, c, a: (a * 2.0).copy_(c["s"]),
    "fill_new": lambda L, c, a: L.tensor(np.full((), 0.5)).fill_(c["s"]),
    "fill_traced": lambda L, c, a: (a * 2.0).fill_(c["s"]),
    # the copy then used: the result of an op on the written tensor
    "copy_then_op": lambda L, c, a: (a + 1.0).copy_(c["s"]) * a + 3.0,
}


@pytest.mark.parametrize("name", sorted(BODIES))
def test_copy_of_a_capture_reads_its_value_at_each_call(name):
    body = BODIES[name]
    got, want = [], []
    for lib, out in ((tj, got), (torch, want)):
        caps = _caps(lib)
        f = (lambda a, lib=lib, caps=caps: body(lib, caps, a))
        cf = tj.compile(f) if lib is tj else f
        a = lib.tensor(np.float64(0.75))
        out.append(cf(a).detach().numpy().copy())
        with lib.no_grad():
            caps["s"].copy_(lib.tensor(np.full((), NEW)))
            caps["v"].copy_(lib.tensor(np.full((2,), NEW)))
        out.append(cf(a).detach().numpy().copy())       # (tracejit: the cache hit)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12)


def test_copy_of_a_captured_numpy_array_reads_it_at_each_call():
    g0, g1 = np.full((), OLD), np.full((2,), OLD)

    def f(a):
        return (a * 2.0).copy_(g0), tj.tensor(np.zeros(2)).copy_(g1)
    cf = tj.compile(f)
    a = tj.tensor(np.float64(0.75))
    first = [o.numpy().copy() for o in cf(a)]
    g0[...], g1[...] = NEW, NEW
    second = [o.numpy() for o in cf(a)]
    np.testing.assert_allclose(first[0], OLD)
    np.testing.assert_allclose(first[1], [OLD, OLD])
    np.testing.assert_allclose(second[0], NEW)
    np.testing.assert_allclose(second[1], [NEW, NEW])


@pytest.mark.parametrize("compiled", [False, True])
def test_fill_with_a_tensor_that_requires_grad_gives_it_its_gradient(compiled):
    grads = []
    for lib in (tj, torch):
        v = lib.tensor(np.float64(2.0), requires_grad=True)

        def f(a, lib=lib, v=v):
            x = lib.tensor(np.float64(0.0))
            x.fill_(v)
            return x * a
        fn = tj.compile(f) if compiled and lib is tj else f
        out = fn(lib.tensor(np.float64(3.0)))
        assert out.requires_grad
        np.testing.assert_allclose(out.detach().numpy(), 6.0)
        out.backward()
        grads.append(v.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)


def test_compiled_fuzzer_seed_3309():
    import compiled_fuzz_run as R
    assert R.run_compiled(3309) == "ok"
