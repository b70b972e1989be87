"""tj.grad / tj.value_and_grad of a compiled function and the whole-executable disk cache: the
executable is keyed by the traced primal graph and the transform, so a hit (in a new process
or a new compiled function) builds neither the reverse-mode graph nor its optimization; every
part of the transform is in the key (no stale hit); and whatever needs the joint graph later
(.lower(), TRACEJIT_DUMP=grad, a gradient of the gradient) builds it then."""

import numpy as np
import pytest

import tracejit as tj
from child_process import run_child
from tracejit.ir import autodiff
from tracejit.runtime import cache, exe_cache, grad_trace, llvm_backend


_CHILD = """
import json
import numpy as np
import tracejit as tj
from tracejit.runtime import grad_trace, llvm_backend

built, plans = [], []
real_vjp, real_plan = grad_trace.vjp_graph, llvm_backend.make_plan
grad_trace.vjp_graph = lambda *a, **k: (built.append(1), real_vjp(*a, **k))[1]
llvm_backend.make_plan = lambda g: (plans.append(1), real_plan(g))[1]

def loss(w, b, x):
    h = tj.tanh(x @ w + b)
    return (h * h).mean() + 0.1 * tj.sin(w).sum()

rng = np.random.default_rng(0)
w, b, x = (rng.standard_normal(s).astype(np.float32) for s in ((6, 4), (4,), (5, 6)))
gw, gb = tj.grad(tj.compile(loss), argnums=(0, 1))(w, b, x)
v, gx = tj.value_and_grad(tj.compile(loss), argnums=2)(w, b, x)
print(json.dumps({"gw": gw.numpy().tolist(), "gb": gb.numpy().tolist(), "v": float(v.numpy()),
                  "gx": gx.numpy().tolist(), "built": len(built), "plans": len(plans)}))
"""


def _child(cache_dir):
    return run_child(_CHILD, cache_dir)


def _loss64(w, b, x):
    h = np.tanh(x @ w + b)
    return (h * h).mean() + 0.1 * np.sin(w).sum()


def _central(f, args, k, eps=1e-6):
    args = [a.astype(np.float64) for a in args]
    g = np.zeros_like(args[k])
    for i in np.ndindex(g.shape):
        hi, lo = [a.copy() for a in args], [a.copy() for a in args]
        hi[k][i] += eps
        lo[k][i] -= eps
        g[i] = (f(*hi) - f(*lo)) / (2 * eps)
    return g


def test_a_new_process_skips_the_reverse_mode_transform(tmp_path):
    cold = _child(tmp_path)
    assert cold["built"] == 2 and cold["plans"] == 2
    hit = _child(tmp_path)
    # neither reverse-mode graph was built, nor planned: both executables came from the disk
    assert hit["built"] == 0 and hit["plans"] == 0
    for k in ("gw", "gb", "v", "gx"):
        assert hit[k] == cold[k], k                 # bit for bit the cold compile's numbers
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(s).astype(np.float32) for s in ((6, 4), (4,), (5, 6))]
    for k, name in ((0, "gw"), (1, "gb"), (2, "gx")):
        np.testing.assert_allclose(hit[name], _central(_loss64, args, k), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(hit["v"], _loss64(*args), rtol=1e-5)


# -- in one process -----------------------------------------------------------------------------
@pytest.fixture
def counts(tmp_path, monkeypatch):
    """Counts reverse-mode graphs built and fusion plans made (0 and 0: a disk-cache hit)."""
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache, "_warned", set())
    c = {"built": 0, "plans": 0}
    real_vjp, real_plan = grad_trace.vjp_graph, llvm_backend.make_plan

    def vjp(*a, **k):
        c["built"] += 1
        return real_vjp(*a, **k)

    def plan(g):
        c["plans"] += 1
        return real_plan(g)
    monkeypatch.setattr(grad_trace, "vjp_graph", vjp)
    monkeypatch.setattr(llvm_backend, "make_plan", plan)
    return c


RNG = np.random.default_rng(1)
A = RNG.standard_normal((3, 4)).astype(np.float32)
B = RNG.standard_normal(4).astype(np.float32)


def _f(a, b, scale=2.0):
    return (tj.tanh(a * scale) * b).sum()


def _f64(a, b, scale=2.0):
    return (np.tanh(a * scale) * b).sum()


def _run(kind="grad", argnums=0, fn=_f, has_aux=False):
    out = getattr(tj, kind)(tj.compile(fn), argnums=argnums, has_aux=has_aux)(A, B)
    return out


def _check_grads(got, argnums, scale=2.0):
    nums = (argnums,) if isinstance(argnums, int) else argnums
    got = (got,) if isinstance(argnums, int) else got
    for k, g in zip(nums, got):
        want = _central(lambda a, b: _f64(a, b, scale), [A, B], k)
        np.testing.assert_allclose(g.numpy(), want, rtol=1e-4, atol=1e-6)


def test_a_hit_in_a_new_compiled_function_builds_nothing(counts):
    _check_grads(_run(argnums=(0, 1)), (0, 1))
    assert counts == {"built": 1, "plans": 1}
    _check_grads(_run(argnums=(0, 1)), (0, 1))
    assert counts == {"built": 1, "plans": 1}


@pytest.mark.parametrize("change", ["argnums", "argnums order", "kind", "has_aux", "constant",
                                    "primitive"])
def test_each_part_of_the_transform_is_in_the_key(counts, change):
    """A change of what is differentiated, of the outputs' order or of the primal graph is a
    miss (built and planned again) with the right numbers; never a stale hit."""
    _check_grads(_run(argnums=0), 0)
    assert counts == {"built": 1, "plans": 1}
    if change == "argnums":
        _check_grads(_run(argnums=1), 1)
    elif change == "argnums order":
        _check_grads(_run(argnums=0), 0)        # (a hit)
        assert counts == {"built": 1, "plans": 1}
        _check_grads(_run(argnums=(0, 1)), (0, 1))
        assert counts == {"built": 2, "plans": 2}
        _check_grads(_run(argnums=(1, 0)), (1, 0))
        assert counts == {"built": 3, "plans": 3}
        return
    elif change == "kind":
        v, g = _run("value_and_grad", argnums=0)
        np.testing.assert_allclose(v.numpy(), _f64(A, B), rtol=1e-5)
        _check_grads(g, 0)
    elif change == "has_aux":
        g, aux = _run(argnums=0, fn=lambda a, b: (_f(a, b), a * 3.0), has_aux=True)
        _check_grads(g, 0)
        np.testing.assert_allclose(aux.numpy(), A * 3.0, rtol=1e-6)
    elif change == "constant":
        _check_grads(_run(argnums=0, fn=lambda a, b: _f(a, b, 2.5)), 0, scale=2.5)
    else:
        g = _run(argnums=0, fn=lambda a, b: (tj.sin(a * 2.0) * b).sum())
        want = np.cos(A * 2.0) * 2.0 * B
        np.testing.assert_allclose(g.numpy(), want, rtol=1e-5, atol=1e-6)
    assert counts == {"built": 2, "plans": 2}


def test_what_needs_the_joint_graph_builds_it_after_a_hit(counts, monkeypatch, capsys):
    g = tj.grad(tj.compile(_f), argnums=0)
    cold_ir = g.lower(A, B).as_text()
    _run(argnums=0)
    assert counts["built"] == 1
    # .lower() of a hit shows the same optimized graph, built when asked for
    hit = tj.grad(tj.compile(_f), argnums=0)
    hit(A, B)
    assert counts == {"built": 1, "plans": 1}
    assert hit.lower(A, B).as_text() == cold_ir and counts["built"] == 2
    # TRACEJIT_DUMP=grad prints the reverse-mode graph of a hit too
    capsys.readouterr()
    monkeypatch.setenv("TRACEJIT_DUMP", "grad")
    _check_grads(_run(argnums=0), 0)
    assert "@grad__f(" in capsys.readouterr().err and counts["built"] == 3
    assert counts["plans"] == 1


def test_the_gradient_of_a_cached_gradient(counts):
    """A compiled gradient called on tensors that require grad differentiates its own graph:
    built from the hit's shell when its backward is compiled (a Hessian-vector product)."""
    def f(a):
        return (tj.sin(a) * a).sum()

    def hvp(lib):
        a = tj.tensor(A, requires_grad=True)
        g = tj.grad(tj.compile(f))(a)
        (g * tj.tensor(B[:3, None] * np.ones((3, 4), np.float32))).sum().backward()
        return a.grad.numpy()
    first = hvp(tj)
    assert counts["built"] >= 1 and counts["plans"] >= 1
    plans = counts["plans"]
    again = hvp(tj)
    np.testing.assert_array_equal(again, first)
    assert counts["plans"] == plans               # every executable from the disk cache
    v = B[:3, None] * np.ones((3, 4))
    a64 = A.astype(np.float64)
    # d/da of sum(v * (cos(a) a + sin(a))) = v * (2 cos(a) - a sin(a))
    np.testing.assert_allclose(first, v * (2 * np.cos(a64) - a64 * np.sin(a64)), rtol=1e-5,
                               atol=1e-6)


def test_no_grad_inside_a_compiled_function_stops_its_gradient():
    """The IR transform cannot see grad mode: a function that turns it off is differentiated
    by the eager engine's trace instead (before, the no_grad block was differentiated)."""
    def f(x):
        with tj.no_grad():
            y = x * 2.0
        return (x * y).sum()
    x = np.arange(1, 4, dtype=np.float32)
    np.testing.assert_allclose(tj.grad(tj.compile(f))(x).numpy(), 2.0 * x)
    v, g = tj.value_and_grad(tj.compile(f))(x)
    np.testing.assert_allclose(g.numpy(), 2.0 * x)
    np.testing.assert_allclose(v.numpy(), (2.0 * x * x).sum())

    def h(x):
        tj.set_grad_enabled(False)
        y = x * 3.0
        tj.set_grad_enabled(True)
        return (x * y).sum()
    np.testing.assert_allclose(tj.grad(tj.compile(h))(x).numpy(), 3.0 * x)


def test_the_deferred_key_is_the_transform_of_the_primal_text(counts):
    g = tj.grad(tj.compile(_f), argnums=(1, 0))
    g(A, B)
    hit = tj.grad(tj.compile(_f), argnums=(1, 0))
    entry = hit._entry((A, B), {})[0]
    build = entry.traced.joint_build
    assert not build.built
    text = build.key_text()
    assert text.startswith("vjp seed_first") and "wrt=[1, 0]" in text
    assert exe_cache.graph_text(build.primal) in text


def test_vjp_graph_into_refuses_a_shell_of_other_inputs():
    from tracejit.ir.core import Aval, Graph
    from tracejit.ir import dtypes
    fwd = Graph("f")
    x = fwd.add_input(Aval((3,), dtypes.f32))
    fwd.outputs = [fwd.emit(tj.ir.primitives.P.sum, [x], {"axes": (0,)})]
    shell = Graph("g")
    shell.add_input(Aval((4,), dtypes.f32))
    with pytest.raises(ValueError, match="not an empty graph with the inputs"):
        autodiff.vjp_graph(fwd, [0], seed_first=True, into=shell)
