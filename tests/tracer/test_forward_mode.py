"""Forward mode: tj.jvp, tj.linearize, tj.jacfwd, tj.jacrev, tj.hessian (= jacfwd(jacrev)) on
plain and compiled functions, nested with grad in every order, against torch.func, closed
forms and the reverse mode; the JVP of random programs against their VJP by transposition."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tracejit as tj
from randgraph import build, inputs, programs

torch = pytest.importorskip("torch")
tfunc = torch.func

R = np.random.default_rng(7)


def _np(t):
    return t.detach().numpy() if isinstance(t, (tj.Tensor, torch.Tensor)) else np.asarray(t)


def close(a, b, tol=1e-10):
    np.testing.assert_allclose(_np(a), _np(b), rtol=tol, atol=tol)


def f_tj(x, w):
    h = tj.tanh(x @ w) * tj.exp(-x.sum(1, keepdims=True) * 0.1)
    return tj.logsumexp(h, -1) + tj.sqrt(tj.abs(x).sum(-1) + 1.0)


def f_torch(x, w):
    h = torch.tanh(x @ w) * torch.exp(-x.sum(1, keepdim=True) * 0.1)
    return torch.logsumexp(h, -1) + torch.sqrt(torch.abs(x).sum(-1) + 1.0)


X, W = R.standard_normal((5, 4)), R.standard_normal((4, 3))
TX, TW = R.standard_normal((5, 4)), R.standard_normal((4, 3))
T = torch.tensor


@pytest.mark.parametrize("compiled", [False, True])
def test_jvp_matches_torch_func(compiled):
    f = tj.compile(f_tj) if compiled else f_tj
    out, tout = tj.jvp(f, (X, W), (TX, TW))
    want, want_t = tfunc.jvp(f_torch, (T(X), T(W)), (T(TX), T(TW)))
    close(out, want)
    close(tout, want_t)


@pytest.mark.parametrize("compiled", [False, True])
def test_linearize_runs_the_function_once(compiled):
    calls = []

    def f(x, w):
        calls.append(1)
        return f_tj(x, w)
    fn = tj.compile(f) if compiled else f
    out, f_jvp = tj.linearize(fn, X, W)
    n = len(calls)
    assert n == 1
    for k in range(3):
        tx, tw = R.standard_normal(X.shape), R.standard_normal(W.shape)
        _, want = tfunc.jvp(f_torch, (T(X), T(W)), (T(tx), T(tw)))
        close(f_jvp(tx, tw), want)
    assert len(calls) == n + (1 if compiled else 0)   # compiled: the tangent part traces once
    close(out, f_torch(T(X), T(W)))


@pytest.mark.parametrize("compiled", [False, True])
def test_jacfwd_equals_jacrev_and_torch(compiled):
    wrap = tj.compile if compiled else (lambda f: f)
    fwd = wrap(tj.jacfwd(f_tj, argnums=(0, 1)))(X, W)
    rev = wrap(tj.jacrev(f_tj, argnums=(0, 1)))(X, W)
    want = tfunc.jacfwd(f_torch, argnums=(0, 1))(T(X), T(W))
    for a, b, c in zip(fwd, rev, want):
        assert tuple(a.shape) == tuple(c.shape) == (5,) + tuple(c.shape[1:])
        close(a, c)
        close(b, c)
    # and of a compiled function (its transform, compiled)
    cf = tj.compile(f_tj)
    close(tj.jacfwd(cf, argnums=1)(X, W), want[1])
    close(tj.jacrev(cf, argnums=0)(X, W), want[0])


def test_jacobians_of_pytrees_and_integer_outputs():
    def f(p, n):
        return {"y": tj.sin(p["a"]) * p["b"].sum(), "i": tj.argmax(p["a"], 0)}, n * 2.0
    p = {"a": R.standard_normal(3), "b": R.standard_normal((2,))}
    n = R.standard_normal(2)
    jf = tj.jacfwd(f, argnums=(0, 1))(p, n)
    jr = tj.jacrev(f, argnums=(0, 1))(p, n)
    assert jf[0]["i"] is None and jr[0]["i"] is None
    close(jf[0]["y"][0]["a"], np.diag(np.cos(p["a"]) * p["b"].sum()))
    close(jf[0]["y"][0]["b"], np.outer(np.sin(p["a"]), np.ones(2)))
    close(jf[1][1], 2 * np.eye(2))
    for a, b in ((jf[0]["y"][0]["a"], jr[0]["y"][0]["a"]), (jf[0]["y"][1], jr[0]["y"][1]),
                 (jf[1][0]["b"], jr[1][0]["b"])):
        close(a, b)


def test_hessian_closed_forms():
    A = R.standard_normal((4, 4))
    x = R.standard_normal(4)
    quad = lambda x: 0.5 * (x @ (tj.tensor(A) @ x)) + tj.sin(x).sum()   # noqa: E731
    want = 0.5 * (A + A.T) - np.diag(np.sin(x))
    close(tj.hessian(quad)(x), want)
    close(tj.hessian(tj.compile(quad))(x), want)
    close(tj.compile(tj.hessian(quad))(x), want)
    # log-sum-exp: diag(p) - p p^T
    p = np.exp(x - x.max())
    p /= p.sum()
    close(tj.hessian(lambda x: tj.logsumexp(x, 0))(x), np.diag(p) - np.outer(p, p))
    # two arguments: a tuple of tuples (JAX's layout)
    h = tj.hessian(lambda a, b: (a * a * b).sum(), argnums=(0, 1))(x, x + 1)
    close(h[0][0], np.diag(2 * (x + 1)))
    close(h[0][1], np.diag(2 * x))
    close(h[1][0], np.diag(2 * x))
    close(h[1][1], np.zeros((4, 4)))


def test_hessian_matches_torch_and_the_row_by_row_reverse_mode():
    f = lambda x: (tj.tanh(x) ** 3).sum() * tj.exp(x).mean()             # noqa: E731
    ft = lambda x: (torch.tanh(x) ** 3).sum() * torch.exp(x).mean()      # noqa: E731
    x = R.standard_normal(6)
    want = tfunc.hessian(ft)(T(x))
    close(tj.hessian(f)(x), want)
    close(tj.jacobian(tj.grad(f))(x), want)


def test_nesting_with_grad_in_every_order():
    x, v = R.standard_normal(4), R.standard_normal(4)
    f = lambda x: (tj.sin(x) * tj.exp(x)).sum()                           # noqa: E731
    ft = lambda x: (torch.sin(x) * torch.exp(x)).sum()                   # noqa: E731
    hv = tfunc.jvp(tfunc.grad(ft), (T(x),), (T(v),))[1]
    # forward over reverse, plain and compiled
    close(tj.jvp(tj.grad(f), (x,), (v,))[1], hv)
    close(tj.jvp(tj.grad(tj.compile(f)), (x,), (v,))[1], hv)
    close(tj.compile(lambda x, v: tj.jvp(tj.grad(f), (x,), (v,))[1])(x, v), hv)
    # reverse over forward: grad of the directional derivative is H v too (H symmetric)
    dd = lambda x: tj.jvp(f, (x,), (tj.tensor(v),))[1]                    # noqa: E731
    close(tj.grad(dd)(x), hv)
    close(tj.grad(tj.compile(dd))(x), hv)
    close(tj.grad(lambda x: tj.jvp(tj.compile(f), (x,), (v,))[1])(x), hv)
    # forward over forward: v^T H v
    vhv = tj.jvp(lambda x: tj.jvp(f, (x,), (tj.tensor(v),))[1], (x,), (v,))[1]
    close(vhv, hv.numpy() @ v)
    # eager backward through a jvp's result reaches what the function reads from outside
    w = tj.tensor(R.standard_normal(4), requires_grad=True)
    _, t = tj.jvp(lambda x: (tj.sin(x) * w).sum(), (x,), (v,))
    t.backward()
    close(w.grad, np.cos(x) * v)


def test_jvp_of_integer_outputs_is_none_and_pytrees_keep_their_structure():
    out, tan = tj.jvp(lambda d: {"v": d["x"] * 2.0, "i": tj.argmax(d["x"], 0)},
                      ({"x": X[0]},), ({"x": TX[0]},))
    assert tan["i"] is None
    close(tan["v"], 2 * TX[0])
    assert int(out["i"].item()) == int(np.argmax(X[0]))


def test_symbolic_zero_tangent_for_an_unused_input():
    out, tan = tj.jvp(lambda x, y: x * 3.0, (X, W), (TX, TW))
    close(tan, 3 * TX)
    _, tan = tj.jvp(lambda x: tj.ones(3, dtype=tj.float64), (X,), (TX,))
    close(tan, np.zeros(3))


def test_dump_prints_the_jvp_graph(monkeypatch, capsys):
    monkeypatch.setenv("TRACEJIT_DUMP", "jvp")
    tj.jvp(lambda x: tj.sin(x), (X,), (TX,))
    tj.jvp(tj.compile(lambda x: tj.cos(x)), (X,), (TX,))
    err = capsys.readouterr().err
    assert err.count("===== tracejit jvp") == 2
    assert "sin %x0" in err and "cos" in err and "%t_" in err


def test_compiled_jvp_is_cached_per_signature():
    cf = tj.compile(lambda x: tj.tanh(x) * 2.0)
    for _ in range(3):
        tj.jvp(cf, (X,), (TX,))
    from tracejit.runtime.forward import _JVP
    info = _JVP[cf].cache_info()
    assert (info.hits, info.misses) == (2, 1)


# -- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("compiled", [False, True])
def test_bad_tangents_name_the_problem_and_the_callers_line(compiled):
    f = tj.compile(tj.sin) if compiled else tj.sin
    with pytest.raises(ValueError, match=r"jvp: tangent 0 is f64\[3\].*f64\[5, 4\].*"
                                         r"test_forward_mode\.py:\d+"):
        tj.jvp(f, (X,), (np.zeros(3),))
    with pytest.raises(ValueError, match=r"tangent 0 is f32\[5, 4\] but its primal is "
                                         r"f64\[5, 4\].*test_forward_mode\.py:\d+"):
        tj.jvp(f, (X,), (TX.astype(np.float32),))
    with pytest.raises(TypeError, match=r"primal 0 is i64\[3\]; only floating-point.*"
                                        r"test_forward_mode\.py:\d+"):
        tj.jvp(f, (np.arange(3),), (np.zeros(3),))
    with pytest.raises(ValueError, match=r"structure of primals.*test_forward_mode\.py:\d+"):
        tj.jvp(f, (X,), (TX, TX))
    with pytest.raises(TypeError, match=r"primals must be a tuple or list"):
        tj.jvp(f, X, TX)


def test_jacfwd_of_an_integer_argument_is_an_error():
    with pytest.raises(TypeError, match=r"jacfwd: differentiated arguments must be floating "
                                        r"point.*test_forward_mode\.py:\d+"):
        tj.jacfwd(lambda i: i * 2)(np.arange(3))


def test_control_flow_on_values_inside_jvp_says_what_to_do():
    def f(x):
        return x * 2 if x.sum() > 0 else -x
    with pytest.raises(RuntimeError, match=r"tj\.where"):
        tj.jvp(f, (X,), (TX,))


# -- random programs: <J v, u> = <v, J^T u> ---------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(programs, st.integers(0, 2 ** 16))
def test_jvp_is_the_transpose_of_vjp_on_random_programs(prog, seed):
    f = build(prog)
    xs = inputs(seed)
    rng = np.random.default_rng(seed + 1)
    vs = [rng.standard_normal(x.shape) for x in xs]
    outs, touts = tj.jvp(f, tuple(xs), tuple(vs))
    us = [rng.standard_normal(tuple(o.shape)) for o in outs]
    (_, vjp_fn) = tj.vjp(lambda a, b, c: sum(((o * tj.tensor(u)).sum()
                                              for o, u in zip(f(a, b, c), us)),
                                             tj.tensor(0.0, dtype=tj.float64)), *xs)
    grads = vjp_fn(np.float64(1.0))
    lhs = sum(float(np.sum(_np(t) * u)) for t, u in zip(touts, us))
    rhs = sum(float(np.sum(v * _np(g))) for v, g in zip(vs, grads))
    assert np.isclose(lhs, rhs, rtol=1e-8, atol=1e-8), (lhs, rhs)


# -- backends -------------------------------------------------------------------------------
def test_compiled_jacobians_are_cached_not_retraced():
    for transform in (tj.jacfwd, tj.jacrev, tj.hessian):
        cf = tj.compile(transform(lambda x: (tj.tanh(x) * x).sum() * tj.sin(x)))
        for _ in range(3):
            cf(X[0])
        assert cf.cache_info().misses == 1 and cf.cache_info().hits == 2, transform


def _cuda_graphs():
    """Transformed graphs lowered for the CUDA backend (no GPU needed to lower)."""
    x32, w32 = X.astype(np.float32), W.astype(np.float32)
    tx32, tw32 = TX.astype(np.float32), TW.astype(np.float32)
    from tracejit.runtime.forward import JvpCompiledFunction, LinearizedParts
    base = tj.compile(f_tj, device="cuda")
    jvp_fn = JvpCompiledFunction(base)
    parts = LinearizedParts(base)
    hess = tj.compile(tj.hessian(lambda x: (tj.tanh(x) * x).sum()), device="cuda")
    jf = tj.compile(tj.jacfwd(f_tj, argnums=1), device="cuda")
    return [jvp_fn.lower((x32, w32), (tx32, tw32), ()),
            parts.primal.lower((x32, w32), ()),
            parts.tangent.lower([np.zeros(v.shape, v.dtype.np) for v in
                                 parts.split((x32, w32), (), tj.device("cpu"))[2].inputs[:-2]],
                                (tx32, tw32), ()),
            hess.lower(x32[0]), jf.lower(x32, w32)]


def test_transformed_graphs_lower_to_cuda(fake_gpu):
    for low in _cuda_graphs():
        src = low.cuda_source
        assert "__global__" in src, low.as_text()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_transformed_graphs_compile_with_nvcc(fake_gpu, tmp_path):
    for i, low in enumerate(_cuda_graphs()):
        cu = tmp_path / f"g{i}.cu"
        cu.write_text(low.cuda_source)
        r = subprocess.run([shutil.which("nvcc"), "-ptx", "-arch=sm_90", "-o",
                            str(tmp_path / f"g{i}.ptx"), str(cu)], capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.gpu
def test_compiled_forward_mode_on_a_real_gpu():
    if not tj.cuda_available():
        pytest.skip("no CUDA device")
    dev = lambda a: tj.tensor(a, device="cuda")                           # noqa: E731
    out, tout = tj.jvp(tj.compile(f_tj), (dev(X), dev(W)), (dev(TX), dev(TW)))
    want, want_t = tfunc.jvp(f_torch, (T(X), T(W)), (T(TX), T(TW)))
    close(out.cpu(), want, 1e-9)
    close(tout.cpu(), want_t, 1e-9)
    jf = tj.compile(tj.jacfwd(f_tj, argnums=1))(dev(X), dev(W))
    close(jf.cpu(), tfunc.jacfwd(f_torch, argnums=1)(T(X), T(W)), 1e-9)
    h = tj.hessian(tj.compile(lambda x: (tj.tanh(x) * x).sum()))(dev(X[0]))
    close(h.cpu(), tfunc.hessian(lambda x: (torch.tanh(x) * x).sum())(T(X[0])), 1e-9)


@pytest.mark.parametrize("compiled", [False, True])
def test_linearize_errors(compiled):
    f = tj.compile(tj.sin) if compiled else tj.sin
    with pytest.raises(TypeError, match=r"linearize: primal 0 is i64\[3\]; only floating-point"
                                        r".*test_forward_mode\.py:\d+"):
        tj.linearize(f, np.arange(3))
    _, f_jvp = tj.linearize(f, X)
    with pytest.raises(ValueError, match=r"linearize: tangent 0 is f64\[4\] but its primal is "
                                         r"f64\[5, 4\].*test_forward_mode\.py:\d+"):
        f_jvp(np.zeros(4))
