"""Dense linear algebra on batches of matrices (the trailing two axes; any leading axes are a
batch): inverse, solve, Cholesky, triangular solve, determinant and log-determinant. The
spectral factorizations (QR, eigh, SVD, pinv) are in prims_linalg_spectral.py; the helpers
their rules share are here.

Lowering: every one is an *extern* primitive (as argsort, see prims_sort.py): the code
generators do not generate it; the CPU backend calls this NumPy implementation (LAPACK through
np.linalg) between native segments, and the CUDA backend calls it on CuPy arrays (np.linalg
dispatches to cupy.linalg). The triangular solve is a substitution over the rows, vectorized
across the batch and the right-hand sides (NumPy has no triangular solver, and an LU solve
would raise where torch's triangular solve returns inf/nan for a zero on the diagonal).

Gradient rules are the standard ones (as torch's FunctionsManual): inv: -X^T g X^T; solve:
gB = solve(A^T, g), gA = -gB X^T; cholesky: L^-T Phi(L^T gL) L^-1 symmetrized; triangular
solve: the solve's, restricted to the triangle read; det: g * cofactor(A), the cofactor
matrix computed from the SVD so that it is right for singular A too; logabsdet: g A^-T.
"""
from __future__ import annotations

import numpy as np

from . import dtypes as dt
from .batching import batch_elementwise
from .core import Aval
from .primitives import (P, Primitive, add, bind, broadcast, const_like, matmul, mul, neg,
                         op_error, reduce_sum, reshape, sub, swap_last, tangent_or_zeros,
                         where)


class LinAlgError(RuntimeError):
    """A factorization failed on its input (singular, not positive-definite): torch's
    torch.linalg.LinAlgError, also a RuntimeError."""


FLOATS = (dt.f32, dt.f64)


def check_matrix(name: str, a: Aval, square: bool = True) -> None:
    """Raise unless `a` is a float32/float64 batch of (square) matrices."""
    if a.ndim < 2:
        raise op_error(name, f"the input must have at least 2 dimensions, got {a}")
    if a.dtype not in FLOATS:
        raise op_error(name, f"expected a float32 or float64 tensor, got {a}", TypeError)
    if square and a.shape[-1] != a.shape[-2]:
        raise op_error(name, f"A must be batches of square matrices, but they are "
                       f"{a.shape[-2]} by {a.shape[-1]} matrices ({a})")


def lapack(name: str, fn, what: str):
    """fn, with NumPy's LinAlgError raised again as LinAlgError naming the op (`what` says
    what was wrong with the input)."""
    def impl(*args, **params):
        try:
            with np.errstate(all="ignore"):
                return fn(*args, **params)
        except np.linalg.LinAlgError:
            shapes = ", ".join(f"{a.dtype}{list(a.shape)}" for a in args)
            raise op_error(name, f"the input ({shapes}) {what}", LinAlgError) from None
    return impl


def per_matrix(fn, a, fill: bool):
    """fn over a batch, trying it per matrix when the batch fails: NaN results where it
    fails (fill=True, the *_ex forms' outputs), or the failure flags (fill=False)."""
    flat = a.reshape((-1,) + a.shape[-2:])
    ok = np.ones(flat.shape[0], dtype=bool)
    out = []
    for i in range(flat.shape[0]):
        try:
            out.append(fn(flat[i]))
        except np.linalg.LinAlgError:
            ok[i] = False
            out.append(flat[i] * np.nan)
    if not fill:
        return ok.reshape(a.shape[:-2])
    return (np.stack(out) if out else flat.copy()).reshape(a.shape)


def forgiving(fn):
    """fn(a), or with ex=True fn per matrix with NaN where it fails (no error)."""
    def impl(a, ex=False):
        try:
            with np.errstate(all="ignore"):
                return fn(a)
        except np.linalg.LinAlgError:
            if not ex:
                raise
        return per_matrix(fn, a, True)
    return impl


# -- helpers the rules are written in (any world: eager arrays, Tensors, IR values) -----------
def mT(x):
    return swap_last(x)


def _const_mask(x, mask: np.ndarray):
    return broadcast(const_like(x, mask), tuple(x.shape))


def triangle(x, upper: bool, k: int = 0):
    """x with everything outside the upper (lower) triangle from diagonal k zeroed."""
    n, m = x.shape[-2], x.shape[-1]
    ones = np.ones((n, m), dtype=bool)
    mask = np.triu(ones, k) if upper else np.tril(ones, k)
    return where(_const_mask(x, mask), x, 0.0)


def eye_like(x):
    n = x.shape[-1]
    return _const_mask(x, np.eye(x.shape[-2], n, dtype=x.dtype.np))


def diag_embed(v, n_rows: int | None = None):
    """[..., n] -> [..., n, n] with v on the diagonal."""
    n = v.shape[-1]
    lead = tuple(v.shape[:-1])
    rows = broadcast(reshape(v, lead + (1, n)), lead + (n, n))
    return mul(rows, broadcast(const_like(v, np.eye(n, dtype=v.dtype.np)), lead + (n, n)))


def diagonal(x):
    """The diagonal of square matrices [..., n, n] -> [..., n]."""
    return reduce_sum(mul(x, eye_like(x)), [len(x.shape) - 1])


def as_matrix_scale(g, like):
    """A batch of scalars [...] spread over matrices shaped like `like` [..., n, m]."""
    lead = tuple(g.shape)
    return broadcast(reshape(g, lead + (1, 1)), tuple(like.shape))


def trace_of_product(a, b):
    """tr(a^T b) per matrix: sum(a * b) over the last two axes."""
    nd = len(a.shape)
    return reduce_sum(mul(a, b), [nd - 2, nd - 1])


def _batch_all(prim, ax, args, batched, params):
    # the batch axis joins the leading (batch) axes these primitives take anyway
    return batch_elementwise(prim, ax, args, batched, params)


# -- inverse ----------------------------------------------------------------------------------
def _infer_square(name: str, avals: list[Aval], **_) -> Aval:
    check_matrix(name, avals[0])
    return avals[0]


def _inv_vjp(g, ins, out, params, need):
    xt = mT(out)
    return [neg(matmul(matmul(xt, g), xt))]


def _inv_jvp(t, ins, out, params):
    return None if t[0] is None else neg(matmul(matmul(out, t[0]), out))


def inv(a):
    return bind(P.linalg_inv, a)


P.register(Primitive("linalg_inv", "extern", _infer_square,
                     lapack("linalg.inv", forgiving(np.linalg.inv),
                            "is singular: it has no inverse"),
                     vjp=_inv_vjp, jvp=_inv_jvp, save_out=True, arity=1, batch=_batch_all,
                     params={"ex": "bool"}))


# -- solve: A X = B, B a batch of matrices with A's batch shape -------------------------------
def _infer_solve(name: str, avals: list[Aval]) -> Aval:
    a, b = avals
    check_matrix(name, a)
    if b.ndim != a.ndim or b.shape[:-2] != a.shape[:-2] or b.shape[-2] != a.shape[-1] \
            or b.dtype is not a.dtype:
        raise op_error(name, f"incompatible shapes or dtypes: A {a}, B {b}")
    return b


def solve(a, b):
    return bind(P.linalg_solve, a, b)


def _solve_vjp(g, ins, out, params, need):
    a = ins[0]
    gb = solve(mT(a), g)
    ga = neg(matmul(gb, mT(out))) if need[0] else None
    return [ga, gb if need[1] else None]


def _solve_jvp(t, ins, out, params):
    ta, tb = t
    if ta is None and tb is None:
        return None
    rhs = tangent_or_zeros(tb, out)
    if ta is not None:
        rhs = sub(rhs, matmul(ta, out))
    return solve(ins[0], rhs)


P.register(Primitive("linalg_solve", "extern", _infer_solve,
                     lapack("linalg.solve", np.linalg.solve, "has a singular A"),
                     vjp=_solve_vjp, jvp=_solve_jvp, saves=(0,), save_out=True, arity=2,
                     batch=_batch_all))


# -- triangular solve: A X = B with A triangular (only its triangle is read) ------------------
def _infer_trisolve(name: str, avals: list[Aval], upper: bool, unit: bool) -> Aval:
    return _infer_solve(name, avals)


def _trisolve_impl(a, b, upper, unit):
    n = a.shape[-1]
    x = b.astype(b.dtype, copy=True)
    rows = range(n - 1, -1, -1) if upper else range(n)
    with np.errstate(all="ignore"):
        for i in rows:
            done = slice(i + 1, n) if upper else slice(0, i)
            r = x[..., i:i + 1, :]
            if i != (n - 1 if upper else 0):
                r = r - a[..., i:i + 1, done] @ x[..., done, :]
            if not unit:
                r = r / a[..., i:i + 1, i:i + 1]
            x[..., i:i + 1, :] = r
    return x


def solve_triangular(a, b, upper: bool, unit: bool = False):
    return bind(P.linalg_trisolve, a, b, upper=upper, unit=unit)


def _read_triangle(x, upper: bool, unit: bool):
    # the part of A a triangular solve reads: its triangle, without the diagonal if unit
    return triangle(x, upper, (1 if upper else -1) if unit else 0)


def _trisolve_vjp(g, ins, out, params, need):
    a = ins[0]
    upper, unit = params["upper"], params["unit"]
    gb = solve_triangular(mT(a), g, not upper, unit)
    ga = _read_triangle(neg(matmul(gb, mT(out))), upper, unit) if need[0] else None
    return [ga, gb if need[1] else None]


def _trisolve_jvp(t, ins, out, params):
    ta, tb = t
    if ta is None and tb is None:
        return None
    upper, unit = params["upper"], params["unit"]
    rhs = tangent_or_zeros(tb, out)
    if ta is not None:
        rhs = sub(rhs, matmul(_read_triangle(ta, upper, unit), out))
    return solve_triangular(ins[0], rhs, upper, unit)


P.register(Primitive("linalg_trisolve", "extern", _infer_trisolve, _trisolve_impl,
                     vjp=_trisolve_vjp, jvp=_trisolve_jvp, saves=(0,), save_out=True, arity=2,
                     params={"upper": "bool", "unit": "bool"}, batch=_batch_all))


# -- Cholesky: A = L L^T, L lower (only A's lower triangle is read) ---------------------------
def _phi(x):
    """The lower triangle of x with its diagonal halved."""
    return sub(triangle(x, False), mul(triangle(triangle(x, False), True), 0.5))


def _chol_vjp(g, ins, out, params, need):
    lo = out
    p = _phi(matmul(mT(lo), g))
    z = solve_triangular(mT(lo), p, True)                     # L^-T P
    ga = mT(solve_triangular(mT(lo), mT(z), True))            # (L^-T P) L^-1
    return [mul(add(ga, mT(ga)), 0.5)]


def _chol_jvp(t, ins, out, params):
    if t[0] is None:
        return None
    lo = out
    w = solve_triangular(lo, t[0], False)                     # L^-1 dA
    w = mT(solve_triangular(lo, mT(w), False))                # L^-1 dA L^-T
    return matmul(lo, _phi(w))


def cholesky(a):
    return bind(P.linalg_cholesky, a)


P.register(Primitive("linalg_cholesky", "extern", _infer_square,
                     lapack("linalg.cholesky", forgiving(np.linalg.cholesky),
                            "is not positive-definite: the factorization could not be "
                            "completed"),
                     vjp=_chol_vjp, jvp=_chol_jvp, save_out=True, arity=1, batch=_batch_all,
                     params={"ex": "bool"}))


# -- determinants -----------------------------------------------------------------------------
def _infer_det(name: str, avals: list[Aval]) -> Aval:
    check_matrix(name, avals[0])
    return Aval(avals[0].shape[:-2], avals[0].dtype)


def _cofactor_impl(a):
    """The cofactor matrix det(A) A^-T, from the SVD A = U S Vh so that it is right (and
    finite) for singular A: det(U) det(Vh) U diag(prod_{j != i} s_j) Vh. (Array functions
    only, no host constants: the same code runs on CuPy arrays.)"""
    n = a.shape[-1]
    if n == 0:
        return a.copy()
    u, s, vh = np.linalg.svd(a)
    one = np.ones_like(s[..., :1])
    before = np.concatenate([one, np.cumprod(s, axis=-1)[..., :-1]], axis=-1)
    after = np.flip(np.concatenate([one, np.cumprod(np.flip(s, -1), axis=-1)[..., :-1]],
                                   axis=-1), -1)
    p = before * after                                  # prod_{j != i} s_j, no division
    sign = np.linalg.det(u) * np.linalg.det(vh)
    return (sign[..., None, None] * (u * p[..., None, :])) @ vh


def _cofactor_vjp(g, ins, out, params, need):
    # C = det(A) X^T with X = A^-1 (A invertible): gA = det (<G, X^T> X^T - X^T G^T X^T)
    a = ins[0]
    xt = mT(inv(a))
    d = bind(P.linalg_det, a)
    inner = as_matrix_scale(trace_of_product(g, xt), xt)
    return [mul(as_matrix_scale(d, xt), sub(mul(inner, xt), matmul(matmul(xt, mT(g)), xt)))]


def _cofactor_jvp(t, ins, out, params):
    # dC = det (tr(X dA) X^T - X^T dA^T X^T) (A invertible)
    if t[0] is None:
        return None
    a, da = ins[0], t[0]
    xt = mT(inv(a))
    d = as_matrix_scale(bind(P.linalg_det, a), xt)
    tr = as_matrix_scale(trace_of_product(xt, da), xt)
    return mul(d, sub(mul(tr, xt), matmul(matmul(xt, mT(da)), xt)))


P.register(Primitive("linalg_cofactor", "extern", _infer_square,
                     lapack("linalg.det (gradient)", _cofactor_impl, "has no SVD"),
                     vjp=_cofactor_vjp, jvp=_cofactor_jvp, saves=(0,), arity=1,
                     batch=_batch_all))


def _det_vjp(g, ins, out, params, need):
    c = bind(P.linalg_cofactor, ins[0])
    return [mul(as_matrix_scale(g, c), c)]


def _det_jvp(t, ins, out, params):
    if t[0] is None:
        return None
    return trace_of_product(bind(P.linalg_cofactor, ins[0]), t[0])


P.register(Primitive("linalg_det", "extern", _infer_det,
                     lapack("linalg.det", np.linalg.det, "has no determinant"),
                     vjp=_det_vjp, jvp=_det_jvp, saves=(0,), arity=1, batch=_batch_all))


def _sign_impl(a):
    return np.linalg.slogdet(a)[0]


def _logabsdet_impl(a):
    return np.linalg.slogdet(a)[1]


P.register(Primitive("linalg_detsign", "extern", _infer_det,
                     lapack("linalg.slogdet", _sign_impl, "has no determinant"),
                     vjp=lambda g, i, o, p, n: [None], jvp=lambda t, i, o, p: None, arity=1,
                     batch=_batch_all))


def _logabsdet_vjp(g, ins, out, params, need):
    xt = mT(inv(ins[0]))
    return [mul(as_matrix_scale(g, xt), xt)]


def _logabsdet_jvp(t, ins, out, params):
    if t[0] is None:
        return None
    return trace_of_product(mT(inv(ins[0])), t[0])


P.register(Primitive("linalg_logabsdet", "extern", _infer_det,
                     lapack("linalg.slogdet", _logabsdet_impl, "has no determinant"),
                     vjp=_logabsdet_vjp, jvp=_logabsdet_jvp, saves=(0,), arity=1,
                     batch=_batch_all))


# -- the info of cholesky_ex / inv_ex: 0 where the factorization succeeds ---------------------
def _infer_info(name: str, avals: list[Aval]) -> Aval:
    check_matrix(name, avals[0])
    return Aval(avals[0].shape[:-2], dt.i32)


def _chol_order(m) -> int:
    # LAPACK's info: the order of the first leading minor that is not positive-definite
    for k in range(1, m.shape[-1] + 1):
        try:
            np.linalg.cholesky(m[:k, :k])
        except np.linalg.LinAlgError:
            return k
    return 0


def _zero_pivot(m) -> int:
    # LAPACK's getrf info: the 1-based position of the first exactly zero pivot of an LU with
    # partial pivoting (here unblocked; LAPACK's blocked one may round differently)
    m = m.astype(m.dtype, copy=True)
    n = m.shape[-1]
    for k in range(n):
        p = k + int(np.argmax(np.abs(m[k:, k])))
        if m[p, k] == 0:
            return k + 1
        m[[k, p]] = m[[p, k]]
        m[k + 1:, k:] -= np.outer(m[k + 1:, k] / m[k, k], m[k, k:])
    return 0


def _info(name: str, fn, order):
    def impl(a):
        if type(a) is not np.ndarray:
            raise op_error(name, "the info of the *_ex forms is computed on the CPU only; "
                           "move the input to the CPU", NotImplementedError)
        try:
            with np.errstate(all="ignore"):
                fn(a)
            return np.zeros(a.shape[:-2], np.int32)
        except np.linalg.LinAlgError:
            pass
        flat = a.reshape((-1,) + a.shape[-2:])
        ok = per_matrix(fn, flat, False)
        info = [0 if good else max(1, order(m)) for good, m in zip(ok, flat)]
        return np.array(info, np.int32).reshape(a.shape[:-2])
    return impl


for _name, _fn, _order in (("linalg_cholesky_info", np.linalg.cholesky, _chol_order),
                           ("linalg_inv_info", np.linalg.inv, _zero_pivot)):
    P.register(Primitive(_name, "extern", _infer_info, _info(_name, _fn, _order),
                         vjp=lambda g, i, o, p, n: [None], jvp=lambda t, i, o, p: None,
                         arity=1, batch=_batch_all))
