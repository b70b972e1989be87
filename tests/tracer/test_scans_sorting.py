"""cumsum, cumprod, prod, any, all, sort, argsort and topk against PyTorch: values, indices and
gradients, float32 and float64, sizes 0 and 1, non-contiguous inputs, NaN and ties, eagerly
and compiled (LLVM), with the interpreter as a second oracle for the compiled graphs."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


def _data(shape, dtype, seed=0, zeros=False, ties=False, nan=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if ties:
        x = np.round(x * 2) / 2
    if zeros and x.size:
        x.reshape(-1)[rng.integers(0, x.size, max(x.size // 4, 1))] = 0.0
    if nan and x.size:
        x.reshape(-1)[rng.integers(0, x.size, max(x.size // 6, 1))] = np.nan
    return x.astype(dtype)


def _t(x, requires_grad=False):
    return torch.tensor(x, requires_grad=requires_grad)


def _check(fn_tj, fn_torch, x, dtype, grad=True, seed=1):
    """Eager values and gradients, and compiled forward/backward, all against torch. The
    functions return one tensor (a float result, or int64 indices)."""
    tol = TOL[dtype]
    tx = _t(x, grad)
    ref = fn_torch(tx)
    ex = tj.tensor(x, requires_grad=grad)
    got = fn_tj(ex)
    np.testing.assert_allclose(got.detach().numpy(), ref.detach().numpy(), **tol, equal_nan=True)
    comp = tj.compile(fn_tj)(x)
    np.testing.assert_allclose(comp.numpy(), ref.detach().numpy(), **tol, equal_nan=True)
    interp = tj.compile(fn_tj, backend="interpreter")(x)
    np.testing.assert_allclose(comp.numpy(), interp.numpy(), **tol, equal_nan=True)
    if not grad or not ref.dtype.is_floating_point:
        return
    w = np.random.default_rng(seed).standard_normal(ref.shape).astype(dtype)
    (ref * _t(w)).sum().backward()
    (got * tj.tensor(w)).sum().backward()
    np.testing.assert_allclose(ex.grad.numpy(), tx.grad.numpy(), **tol)
    g = tj.grad(lambda a, b: (fn_tj(a) * b).sum())(x, w)
    np.testing.assert_allclose(g.numpy(), tx.grad.numpy(), **tol)


SHAPES = [(4, 5), (1, 1), (0, 3), (3, 0), (1,), (7,)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_cumsum_and_cumprod_match_torch(shape, dtype):
    x = _data(shape, dtype, zeros=True)
    for dim in range(-len(shape), len(shape)):
        _check(lambda a: tj.cumsum(a, dim), lambda a: torch.cumsum(a, dim), x, dtype)
        _check(lambda a: tj.cumprod(a, dim), lambda a: torch.cumprod(a, dim), x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cumprod_gradient_with_one_and_several_zeros(dtype):
    x = np.array([[2.0, 0.0, 3.0, 0.5], [1.5, -2.0, 0.0, 0.0], [0.0, 4.0, 1.0, 2.0],
                  [1.0, 2.0, 3.0, 4.0]], dtype)
    for dim in (0, 1):
        _check(lambda a: tj.cumprod(a, dim), lambda a: torch.cumprod(a, dim), x, dtype)
        _check(lambda a: tj.prod(a, dim), lambda a: torch.prod(a, dim), x, dtype)


@pytest.mark.parametrize("x", [[0.7, -1.3, 0.3, 2.1, 0.4], [0.7, -1.3, 0.0, 2.1, 0.4],
                               [0.0, -1.3, 0.5, 0.0, 0.4], [0.7, 0.0, 0.0, 2.1, 0.0]])
def test_cumprod_second_derivative_matches_torch_and_central_differences(x):
    x = np.array(x)
    w = np.array([1.0, -2.0, 0.5, 3.0, 1.5])
    f = lambda a: (tj.cumprod(a, 0) * tj.tensor(w)).sum()                           # noqa: E731
    h = tj.hessian(f)(x).numpy()
    ref = torch.autograd.functional.hessian(lambda a: (torch.cumprod(a, 0) * _t(w)).sum(),
                                            _t(x)).numpy()
    np.testing.assert_allclose(h, ref, rtol=1e-12, atol=1e-12)
    eps = 1e-5
    g = lambda a: tj.grad(f)(a).numpy()                                            # noqa: E731
    fd = np.stack([(g(x + eps * e) - g(x - eps * e)) / (2 * eps) for e in np.eye(5)], 1)
    np.testing.assert_allclose(h, fd, rtol=1e-6, atol=1e-6)
    # eager double backward (create_graph) too
    a = tj.tensor(x, requires_grad=True)
    (ga,) = tj.autograd.grad(f(a), [a], create_graph=True)
    (ga * tj.tensor(w)).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), ref @ w, rtol=1e-12, atol=1e-12)


def test_non_contiguous_and_0d_inputs():
    x = _data((5, 4), np.float64, zeros=True).T          # a transposed view
    _check(lambda a: tj.cumsum(a.T, 1), lambda a: torch.cumsum(a.T, 1), x, np.float64)
    _check(lambda a: tj.cumprod(a[:, ::2], 0), lambda a: torch.cumprod(a[:, ::2], 0), x,
           np.float64)
    _check(lambda a: tj.sort(a[::2], 0).values, lambda a: torch.sort(a[::2], 0).values, x,
           np.float64)
    s = np.array(2.5)
    _check(lambda a: tj.cumsum(a, 0), lambda a: torch.cumsum(a, 0), s, np.float64)
    _check(lambda a: tj.prod(a), lambda a: torch.prod(a), s, np.float64)
    _check(lambda a: tj.sort(a).values, lambda a: torch.sort(a).values, s, np.float64)
    assert tj.sort(tj.tensor(s)).indices.item() == torch.sort(_t(s)).indices.item() == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 5), (1, 1), (0, 2), (2, 0), (6,)])
def test_prod_matches_torch(shape, dtype):
    x = _data(shape, dtype, zeros=True)
    _check(lambda a: tj.prod(a), lambda a: torch.prod(a), x, dtype)
    for dim in range(len(shape)):
        for kd in (False, True):
            _check(lambda a: tj.prod(a, dim, keepdim=kd), lambda a: torch.prod(a, dim, kd),
                   x, dtype)


def test_integer_and_bool_scans_give_int64_and_dtype_casts():
    x = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    for fn in ("cumsum", "cumprod"):
        r = getattr(tj, fn)(tj.tensor(x), 1)
        ref = getattr(torch, fn)(torch.tensor(x), 1)
        assert r.dtype is tj.int64 and ref.dtype == torch.int64
        np.testing.assert_array_equal(r.numpy(), ref.numpy())
        np.testing.assert_array_equal(tj.compile(lambda a: getattr(tj, fn)(a, 1))(x).numpy(),
                                      ref.numpy())
    b = np.array([True, False, True])
    np.testing.assert_array_equal(tj.cumsum(tj.tensor(b), 0).numpy(), [1, 1, 2])
    r = tj.cumsum(tj.tensor(x), 0, dtype=tj.float64)
    assert r.dtype is tj.float64
    assert tj.prod(tj.tensor(x)).item() == 720 and tj.prod(tj.tensor(x)).dtype is tj.int64
    assert tj.tensor(x).prod(1, dtype=tj.float32).dtype is tj.float32
    m = np.array([[True, False], [True, True]])     # dtype=bool: a product of bools is `all`
    np.testing.assert_array_equal(tj.prod(tj.tensor(m), 1, dtype=tj.bool_).numpy(),
                                  torch.prod(torch.tensor(m), 1, dtype=torch.bool).numpy())


def test_float32_cumsum_accumulates_in_float64():
    x = np.full(1 << 20, 0.1, np.float32)
    want = np.cumsum(x.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(tj.cumsum(tj.tensor(x), 0).numpy(), want)
    np.testing.assert_array_equal(tj.compile(lambda a: tj.cumsum(a, 0))(x).numpy(), want)


def test_any_all_match_torch():
    x = np.array([[0.0, 1.0, np.nan], [0.0, 0.0, 0.0], [2.0, -1.0, 3.0]])
    for fn in ("any", "all"):
        for args in ((), (0,), (1,), (1, True)):
            ref = getattr(torch, fn)(torch.tensor(x), *args).numpy()
            got = getattr(tj, fn)(tj.tensor(x), *args)
            assert got.dtype is tj.bool_
            np.testing.assert_array_equal(got.numpy(), ref)
            np.testing.assert_array_equal(
                tj.compile(lambda a: getattr(tj, fn)(a, *args))(x).numpy(), ref)
        e = np.zeros((0, 3))
        np.testing.assert_array_equal(getattr(tj, fn)(tj.tensor(e), 0).numpy(),
                                      getattr(torch, fn)(torch.tensor(e), 0).numpy())
    m = np.array([True, False])
    assert tj.any(tj.tensor(m)).item() and not tj.all(tj.tensor(m)).item()
    assert tj.tensor(m).any().item() and not tj.tensor(m).all().item()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("shape", [(4, 6), (1, 1), (0, 3), (3, 0), (9,), (2, 3, 4)])
def test_sort_matches_torch_with_ties_and_nan(shape, dtype, descending):
    x = _data(shape, dtype, ties=True, nan=True)
    for dim in range(-len(shape), len(shape)):
        kw = dict(dim=dim, descending=descending, stable=True)
        _check(lambda a: tj.sort(a, **kw).values,
               lambda a: torch.sort(a, **kw).values, x, dtype)
        _check(lambda a: tj.sort(a, **kw).indices,
               lambda a: torch.sort(a, **kw).indices, x, dtype, grad=False)
        _check(lambda a: tj.argsort(a, dim, descending, stable=True),
               lambda a: torch.argsort(a, dim=dim, descending=descending, stable=True),
               x, dtype, grad=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("largest", [True, False])
def test_topk_matches_torch(dtype, largest):
    # no ties (NaNs included): torch's order among ties is unspecified
    x = _data((5, 7), dtype)
    x[0, 2] = x[3, 5] = np.nan
    for dim, ks in ((1, (0, 1, 3, 7)), (0, (2, 5)), (-1, (4,))):
        for k in ks:
            _check(lambda a: tj.topk(a, k, dim, largest).values,
                   lambda a: torch.topk(a, k, dim, largest).values, x, dtype)
            _check(lambda a: tj.topk(a, k, dim, largest).indices,
                   lambda a: torch.topk(a, k, dim, largest).indices, x, dtype, grad=False)
    v, i = tj.tensor(x).topk(2)
    assert v.shape == (5, 2) and i.dtype is tj.int64


def test_integer_sort_and_methods():
    x = np.array([3, -2**63, 7, 3, 2**63 - 1, 0], np.int64)
    for desc in (False, True):
        v, i = tj.tensor(x).sort(descending=desc, stable=True)
        rv, ri = torch.sort(torch.tensor(x), descending=desc, stable=True)
        np.testing.assert_array_equal(v.numpy(), rv.numpy())
        np.testing.assert_array_equal(i.numpy(), ri.numpy())
        np.testing.assert_array_equal(tj.tensor(x).argsort(descending=desc).numpy(), ri.numpy())


def test_errors_name_the_op_and_the_user_line():
    x = tj.tensor(np.zeros((2, 3), np.float32))
    with pytest.raises(IndexError, match=r"topk: k=4 is out of range.*test_scans_sorting.py"):
        tj.topk(x, 4)
    with pytest.raises(IndexError, match=r"cumsum: axis 2 is out of range"):
        tj.cumsum(x, 2)
    with pytest.raises(TypeError, match=r"sort: dim must be an int"):
        tj.sort(x, (0, 1))
    with pytest.raises(TypeError):
        tj.cumsum(x)                         # dim is required, as in torch


def test_kernel_plan_shows_scan_kernels_and_extern_sorts():
    x = np.ones((4, 8), np.float32)

    def f(a):
        s = tj.sort(a * 2, 1).values
        return tj.cumsum(s, 0) + tj.cumprod(a, 1)
    low = tj.compile(f).lower(x)
    plan = low.kernels
    assert plan.count("extern NumPy/CuPy") == 1, plan           # the sort
    assert "scan cumsum axis=0" in plan and "scan cumprod axis=1" in plan, plan
    np.testing.assert_allclose(tj.compile(f)(x).numpy(),
                               tj.compile(f, backend="interpreter")(x).numpy())
    src = tj.compile(f, device="cuda").lower(x).cuda_source
    assert "argsort" not in src and "__global__" in src


@pytest.mark.skipif(__import__("shutil").which("nvcc") is None, reason="nvcc is not installed")
def test_cuda_source_around_extern_steps_compiles_with_nvcc(tmp_path):
    """Graphs with scans and sorts, forward and gradient: the kernels around the extern steps
    (which CuPy runs) compile with nvcc, and the launch list has the extern steps in order."""
    import subprocess

    from tracejit.codegen.cuda_lower import PRELUDE
    from tracejit.codegen.cuda_program import lower_program
    from tracejit.codegen.fusion import plan as make_plan
    from tracejit.runtime.cuda_backend import prepare

    def f(a):
        v = tj.topk(a * 2, 3, 1).values
        return (tj.cumprod(v, 1) + tj.cumsum(a, 0)[:, :3] + tj.prod(a, 0)[:3]).sum()
    x = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    parts = [PRELUDE]
    for i, fn in enumerate((tj.compile(f, device="cuda"),
                            tj.grad(tj.compile(f, device="cuda")))):
        prog = lower_program(make_plan(prepare(fn.lower(x).graph)), prefix=f"g{i}_",
                             prelude=False)
        kinds = [ln.kind for ln in prog.launches]
        assert "extern" in kinds and "kernel" in kinds
        assert "acc = acc * " in prog.source and "acc = acc + " in prog.source  # scan kernels
        parts.append(prog.source)
    cu = tmp_path / "ext.cu"
    cu.write_text("\n".join(parts))
    r = subprocess.run(["nvcc", "-ptx", "-arch=sm_90", "-o", str(tmp_path / "ext.ptx"), str(cu)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    # and on the CPU the same function matches torch, value and gradient
    tx = torch.tensor(x, requires_grad=True)
    tv = torch.topk(tx * 2, 3, 1).values
    ref = (torch.cumprod(tv, 1) + torch.cumsum(tx, 0)[:, :3] + torch.prod(tx, 0)[:3]).sum()
    ref.backward()
    np.testing.assert_allclose(tj.compile(f)(x).item(), ref.item(), rtol=1e-5)
    np.testing.assert_allclose(tj.grad(f)(x).numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-5)
