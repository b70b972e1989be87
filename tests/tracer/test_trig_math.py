"""tan, atan, atan2, asin, acos, sinh, cosh, asinh, acosh, atanh, log2, log10, exp2,
logaddexp2, copysign, signbit, sgn, the NumPy-style aliases and the in-place forms against
torch: values in float32/float64 (eager and compiled), gradients, integer inputs, empty and
broadcast operands; the CUDA source compiles with nvcc (skipped without it)."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

import tracejit as tj

# name -> a domain (lo, hi) where the function and its derivative are finite
DOMAINS = {"tan": (-1.4, 1.4), "atan": (-5, 5), "asin": (-0.95, 0.95), "acos": (-0.95, 0.95),
           "sinh": (-5, 5), "cosh": (-5, 5), "asinh": (-5, 5), "acosh": (1.05, 6),
           "atanh": (-0.95, 0.95), "log2": (0.05, 9), "log10": (0.05, 9), "exp2": (-20, 20)}
ALIASES = {"arctan": "atan", "arcsin": "asin", "arccos": "acos", "arcsinh": "asinh",
           "arccosh": "acosh", "arctanh": "atanh", "arctan2": "atan2", "multiply": "mul",
           "subtract": "sub", "divide": "div", "negative": "neg"}


def _x(name, dtype, n=64):
    lo, hi = DOMAINS[name]
    x = np.random.default_rng(len(name)).uniform(lo, hi, n)
    return x.astype(dtype)


def _ulp_close(got, want, dtype, ulps=2):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got, want, rtol=ulps * eps, atol=ulps * eps * 1e-3)


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_unary_values_and_gradients_match_torch(name):
    for dtype in (np.float32, np.float64):
        x = _x(name, dtype)
        want = getattr(torch, name)(torch.from_numpy(x)).numpy()
        _ulp_close(getattr(tj, name)(tj.tensor(x)).numpy(), want, dtype)
        _ulp_close(getattr(tj.tensor(x), name)().numpy(), want, dtype)
    x = _x(name, np.float64)
    tx = torch.from_numpy(x).requires_grad_()
    (getattr(torch, name)(tx) * torch.arange(64.0)).sum().backward()
    jx = tj.tensor(x, requires_grad=True)
    (getattr(tj, name)(jx) * tj.arange(64.0, dtype=tj.float64)).sum().backward()
    np.testing.assert_allclose(jx.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
    # an integer input computes in float32, as torch's
    xi = np.array([1, 2, 3], np.int64) if name != "acosh" else np.array([1, 2, 5])
    got = getattr(tj, name)(tj.tensor(xi))
    want = getattr(torch, name)(torch.from_numpy(xi))
    assert got.dtype == tj.float32 and want.dtype == torch.float32
    _ulp_close(got.numpy(), want.numpy(), np.float32)


def test_compiled_forward_and_gradient_match_torch():
    names = sorted(DOMAINS)
    xs = [_x(n, np.float32, 33) for n in names]

    def f(*args):
        return sum((getattr(tj, n)(a) * (i + 1)).sum() for i, (n, a) in enumerate(zip(names, args)))
    got = tj.compile(tj.value_and_grad(f, argnums=tuple(range(len(names)))))(*xs)
    ts = [torch.from_numpy(x).requires_grad_() for x in xs]
    want = sum((getattr(torch, n)(a) * (i + 1)).sum() for i, (n, a) in enumerate(zip(names, ts)))
    want.backward()
    np.testing.assert_allclose(float(got[0].numpy()), want.item(), rtol=1e-5)
    for g, t in zip(got[1], ts):
        np.testing.assert_allclose(g.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-6)
    # each compiled function alone: within 2 ulp of torch in float32 and float64
    for n, x in zip(names, xs):
        for dtype in (np.float32, np.float64):
            xd = x.astype(dtype)
            _ulp_close(tj.compile(getattr(tj, n))(xd).numpy(),
                       getattr(torch, n)(torch.from_numpy(xd)).numpy(), dtype)


def test_atan2_broadcasting_promotion_and_gradient_at_origin():
    y = np.array([[0.0, 1.5, -2.0, 0.0, -0.0]])
    x = np.array([[0.0], [-3.0], [0.5]])
    for fn in (tj.atan2, tj.arctan2, tj.compile(tj.atan2)):
        np.testing.assert_array_equal(fn(y, x).numpy() if fn is not tj.atan2 else
                                      fn(tj.tensor(y), tj.tensor(x)).numpy(),
                                      torch.atan2(torch.tensor(y), torch.tensor(x)).numpy())
    got = tj.atan2(tj.tensor([1, -2, 3]), tj.tensor([2]))          # integers: float32
    want = torch.atan2(torch.tensor([1, -2, 3]), torch.tensor([2]))
    assert got.dtype == tj.float32 and want.dtype == torch.float32
    _ulp_close(got.numpy(), want.numpy(), np.float32)
    assert tj.atan2(tj.zeros(0, 3), tj.ones(3)).shape == (0, 3)
    ty, tx = (torch.tensor(v, requires_grad=True) for v in (y, x))
    torch.atan2(ty, tx).sum().backward()
    jy, jx = (tj.tensor(v, requires_grad=True) for v in (y, x))
    tj.atan2(jy, jx).sum().backward()
    np.testing.assert_allclose(jy.grad.numpy(), ty.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(jx.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
    assert np.isfinite(jy.grad.numpy()).all()      # (0, 0): gradient 0 as torch, not NaN


def test_logaddexp2_copysign_signbit_sgn():
    a = np.array([0.0, 1.0, -3.0, 200.0, -np.inf, np.inf, np.inf, 5.0, -0.0, np.nan, -np.nan,
                  2.0])
    b = np.array([0.0, 1.0, 2.0, -200.0, -np.inf, np.inf, 1.0, -0.5, 2.0, 1.0, 1.0, -np.nan])
    for dtype in (np.float32, np.float64):
        ta, tb = torch.tensor(a.astype(dtype)), torch.tensor(b.astype(dtype))
        ja, jb = tj.tensor(a.astype(dtype)), tj.tensor(b.astype(dtype))
        _ulp_close(tj.logaddexp2(ja, jb).numpy(), torch.logaddexp2(ta, tb).numpy(), dtype)
        for fn, tfn in ((tj.copysign, torch.copysign), (tj.compile(tj.copysign), torch.copysign)):
            np.testing.assert_array_equal(np.signbit(fn(ja, jb).numpy()),
                                          np.signbit(tfn(ta, tb).numpy()))
            np.testing.assert_array_equal(fn(ja, jb).numpy(), tfn(ta, tb).numpy())
        for x, tx in ((ja, ta), (jb, tb)):          # -0.0 and -NaN included
            for fn in (tj.signbit, tj.compile(tj.signbit)):
                np.testing.assert_array_equal(fn(x).numpy(), torch.signbit(tx).numpy())
        np.testing.assert_array_equal(tj.sgn(ja).numpy(), torch.sgn(ta).numpy())
    ti = torch.tensor([3, -4, 0])
    assert tj.copysign(tj.tensor([3, -4, 0]), -1.0).dtype == tj.float32
    np.testing.assert_array_equal(tj.copysign(tj.tensor([3, -4, 0]), -1.0).numpy(),
                                  torch.copysign(ti, -1.0).numpy())
    np.testing.assert_array_equal(tj.signbit(tj.tensor([3, -4, 0])).numpy(),
                                  torch.signbit(ti).numpy())
    # gradients: copysign's g * result / a (0 at a == 0); logaddexp2's 2^a / (2^a + 2^b)
    x, y = np.array([1.5, -2.0, 0.0, 3.0]), np.array([[-1.0], [2.0]])
    for f in ("copysign", "logaddexp2"):
        tx, ty = (torch.tensor(v, requires_grad=True) for v in (x, y))
        getattr(torch, f)(tx, ty).sum().backward()
        jx, jy = (tj.tensor(v, requires_grad=True) for v in (x, y))
        getattr(tj, f)(jx, jy).sum().backward()
        np.testing.assert_allclose(jx.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
        if ty.grad is not None and f != "copysign":
            np.testing.assert_allclose(jy.grad.numpy(), ty.grad.numpy(), rtol=1e-12)


def test_aliases_and_inplace_forms():
    for alias, name in ALIASES.items():
        assert getattr(tj, alias) is getattr(tj, name), alias
        assert getattr(tj.Tensor, alias) is getattr(tj.Tensor, name), alias
    x = np.array([0.3, -0.7, 0.1])
    for name in (*DOMAINS, "arcsin", "arctanh", "sgn", "negative"):
        lo, hi = DOMAINS.get(name, (-0.9, 0.9))
        v = np.clip(x, lo, hi) if name not in ("acosh", "arccosh") else x + 2
        t = tj.tensor(v.copy())
        r = getattr(t, name + "_")()
        assert r is t
        np.testing.assert_allclose(t.numpy(), getattr(torch, name)(torch.tensor(v)).numpy(),
                                   rtol=1e-14)
    for name, other in (("atan2_", 2.0), ("copysign_", -1.0), ("multiply_", 3.0),
                        ("subtract_", 1.0), ("divide_", 4.0)):
        t, tt = tj.tensor(x.copy()), torch.tensor(x.copy())
        getattr(t, name)(other)
        getattr(tt, name)(torch.tensor(other, dtype=tt.dtype))
        np.testing.assert_allclose(t.numpy(), tt.numpy(), rtol=1e-14)
    with pytest.raises(Exception):
        tj.tensor([1, 2]).tan_()        # an int64 tensor cannot hold tan's float result


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_cuda_source_compiles_with_nvcc(tmp_path):
    from tracejit.codegen.cuda_lower import PRELUDE
    from tracejit.codegen.cuda_program import lower_program
    from tracejit.codegen.fusion import plan as make_plan
    from tracejit.runtime.cuda_backend import prepare

    def f(*xs):
        out = sum(getattr(tj, n)(x) for n, x in zip(sorted(DOMAINS), xs))
        return (out + tj.atan2(xs[0], xs[1]) + tj.copysign(xs[2], xs[3])).sum() + \
            tj.signbit(xs[4]).sum()
    parts = [PRELUDE]
    for i, dtype in enumerate((np.float32, np.float64, np.float16, tj.bfloat16.np)):
        xs = [np.ones((8, 5), dtype) for _ in DOMAINS]
        g = tj.value_and_grad(tj.compile(f, device="cuda"), argnums=tuple(range(len(xs)))).lower(
            *xs).graph
        parts.append(lower_program(make_plan(prepare(g)), prefix=f"g{i}_", prelude=False).source)
    source = "\n".join(parts)
    for fn in ("tanf(", "atan2(", "acoshf(", "log10(", "exp2f(", "signbit("):
        assert fn in source, fn
    cu = tmp_path / "trig.cu"
    cu.write_text(source)
    r = subprocess.run(["nvcc", "-ptx", "-arch=sm_90", "-o", str(tmp_path / "trig.ptx"), str(cu)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
