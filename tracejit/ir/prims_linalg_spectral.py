"""The spectral factorizations on batches of matrices: QR, the symmetric eigendecomposition,
the SVD, and the pseudo-inverse. Extern primitives as those of prims_linalg.py (LAPACK through
NumPy, CuPy on the GPU).

Each factor is its own primitive (linalg_qr_q / linalg_qr_r, linalg_eigh_vals / _vecs,
linalg_svd_u / _s / _vh) so that each VJP rule sees exactly the cotangents that exist: a loss
of the singular values alone never divides by the gaps between them (torch skips those terms
when gU and gVh are undefined; here they are never formed). The factors of one input come
from one factorization: eager calls keep the last one (keyed on the input's bytes), and in a
compiled program the same call is one value after CSE. LAPACK is deterministic, so the
factors of separate calls agree in sign.

Gradients (torch's FunctionsManual, real case): qr for m >= n (and reduced m < n through the
leading square block); eigh: V (skew(V^T gV) / (l_j - l_i) + diag(gL)) V^T (inf/nan for
repeated eigenvalues, as torch); svd: the standard formula with F_ij = 1/(s_j^2 - s_i^2);
pinv: the Golub-Pereyra derivative of a constant-rank pseudo-inverse.
"""
from __future__ import annotations

import numpy as np

from .core import Aval
from .prims_linalg import (_batch_all, check_matrix, diag_embed, diagonal, eye_like, lapack, mT,
                           solve_triangular, triangle)
from .primitives import (P, Primitive, add, bind, broadcast, const_like, div, matmul, mul, neg,
                         op_error, reshape, sub)

_LAST: dict = {}


def _factor(kind: str, a, key: tuple, fn):
    """fn(a), remembering the last result per kind for an equal NumPy input (the factors of
    one eager call are separate primitives)."""
    if type(a) is not np.ndarray:
        return fn(a)
    k = (key, a.shape, a.dtype.str, a.tobytes())
    hit = _LAST.get(kind)
    if hit is not None and hit[0] == k:
        return hit[1]
    out = fn(a)
    _LAST[kind] = (k, out)
    return out


def _select(x, rows: int, cols: int, offset: int = 0):
    """A constant [rows, cols] matrix picking columns offset.. of a product (world-agnostic
    slicing: x[..., :, offset:offset+cols] == x @ _select(x, x.shape[-1], cols, offset))."""
    return const_like(x, np.eye(rows, cols, -offset, dtype=x.dtype.np))


def _take_cols(x, start: int, count: int):
    return matmul(x, _bcast(_select(x, x.shape[-1], count, start), x, 0))


def _take_rows(x, start: int, count: int):
    return mT(_take_cols(mT(x), start, count))


def _bcast(m, like, _):
    lead = tuple(like.shape[:-2])
    return bind(P.broadcast, m, shape=lead + tuple(m.shape)) if lead else m


# -- QR ---------------------------------------------------------------------------------------
def _qr_shapes(a: Aval, complete: bool):
    m, n = a.shape[-2], a.shape[-1]
    k = m if complete else min(m, n)
    return (a.shape[:-2] + (m, k), a.shape[:-2] + (k, n))


def _infer_qr(part: int):
    def infer(name, avals, complete):
        check_matrix(name, avals[0], square=False)
        return Aval(_qr_shapes(avals[0], complete)[part], avals[0].dtype)
    return infer


def _qr(a, complete):
    return _factor("qr", a, (complete,),
                   lambda x: np.linalg.qr(x, mode="complete" if complete else "reduced"))


def _copyltu(m):
    return add(triangle(m, False), mT(triangle(m, False, -1)))


def _qr_square_grad(q, r, gq, gr):
    """gA for A = Q R with R square (k x k); gq/gr None where zero."""
    m = None
    if gr is not None:
        m = matmul(r, mT(gr))
    if gq is not None:
        t = neg(matmul(mT(gq), q))
        m = t if m is None else add(m, t)
    b = matmul(q, _copyltu(m))
    if gq is not None:
        b = add(b, gq)
    return mT(solve_triangular(r, mT(b), True))               # b R^-T


def _qr_vjp(part: int):
    def vjp(g, ins, out, params, need):
        a = ins[0]
        mm, nn = a.shape[-2], a.shape[-1]
        if params["complete"] and mm > nn:
            raise op_error("linalg.qr", "the QR decomposition is not differentiable when "
                           "mode='complete' and nrows > ncols", RuntimeError)
        q = bind(P.linalg_qr_q, a, complete=False)
        r = bind(P.linalg_qr_r, a, complete=False)
        gq, gr = (g, None) if part == 0 else (None, g)
        if mm >= nn:
            return [_qr_square_grad(q, r, gq, gr)]
        # wide: A = [X | Y], R = [U | V]; X = Q U, Y = Q V
        u = _take_cols(r, 0, mm)
        y = _take_cols(a, mm, nn - mm)
        gu = gv = None
        if gr is not None:
            gu, gv = _take_cols(gr, 0, mm), _take_cols(gr, mm, nn - mm)
            extra = matmul(y, mT(gv))
            gq = extra if gq is None else add(gq, extra)
        gx = _qr_square_grad(q, u, gq, gu)
        gy = matmul(q, gv) if gv is not None else None
        sel_x = _bcast(_select(a, nn, mm, 0), a, 0)            # [n, m]: X = A @ sel_x
        ga = matmul(gx, mT(sel_x))
        if gy is not None:
            sel_y = _bcast(_select(a, nn, nn - mm, mm), a, 0)
            ga = add(ga, matmul(gy, mT(sel_y)))
        return [ga]
    return vjp


def _qr_jvp(part: int):
    # A = QR: C = Q^T dA R^-1 = Q^T dQ + dR R^-1 with Q^T dQ skew and dR R^-1 upper, so
    # W = Q^T dQ = tril(C, -1) - tril(C, -1)^T, dR = (C - W) R, dQ = Q W + (I - Q Q^T) dA R^-1
    def jvp(t, ins, out, params):
        if t[0] is None:
            return None
        a, da = ins[0], t[0]
        if a.shape[-2] < a.shape[-1] or (params["complete"] and a.shape[-2] > a.shape[-1]):
            raise op_error("linalg.qr", "forward-mode derivatives are implemented for "
                           "reduced QR of matrices with at least as many rows as columns, got "
                           f"{list(a.shape)}", NotImplementedError)
        q = bind(P.linalg_qr_q, a, complete=False)
        r = bind(P.linalg_qr_r, a, complete=False)
        dar = mT(solve_triangular(mT(r), mT(da), False))              # dA R^-1
        c = matmul(mT(q), dar)
        low = triangle(c, False, -1)
        w = sub(low, mT(low))
        if part == 1:
            return matmul(sub(c, w), r)
        return add(matmul(q, w), sub(dar, matmul(q, c)))
    return jvp


for _i, _name in enumerate(("linalg_qr_q", "linalg_qr_r")):
    P.register(Primitive(_name, "extern", _infer_qr(_i),
                         (lambda i: lambda a, complete: _qr(a, complete)[i])(_i),
                         vjp=_qr_vjp(_i), jvp=_qr_jvp(_i), saves=(0,),
                         params={"complete": "bool"}, arity=1, batch=_batch_all))


# -- symmetric eigendecomposition -------------------------------------------------------------
def _infer_eigh(part: int):
    def infer(name, avals, lower):
        check_matrix(name, avals[0])
        a = avals[0]
        return Aval(a.shape[:-1], a.dtype) if part == 0 else a
    return infer


def _eigh(a, lower):
    return _factor("eigh", a, (lower,), lambda x: np.linalg.eigh(x, UPLO="L" if lower else "U"))


def _gaps(v):
    """E_ij = v_j - v_i with ones on the diagonal (so a zero numerator there stays zero)."""
    n = v.shape[-1]
    lead = tuple(v.shape[:-1])
    row = bind(P.broadcast, bind(P.reshape, v, shape=lead + (1, n)), shape=lead + (n, n))
    col = bind(P.broadcast, bind(P.reshape, v, shape=lead + (n, 1)), shape=lead + (n, n))
    eye = bind(P.broadcast, const_like(v, np.eye(n, dtype=v.dtype.np)), shape=lead + (n, n))
    return add(sub(row, col), eye)


def _eigh_vjp(part: int):
    def vjp(g, ins, out, params, need):
        a = ins[0]
        lo = params["lower"]
        vecs = bind(P.linalg_eigh_vecs, a, lower=lo)
        if part == 0:
            inner = diag_embed(g)
        else:
            vals = bind(P.linalg_eigh_vals, a, lower=lo)
            x = matmul(mT(vecs), g)
            inner = div(mul(sub(x, mT(x)), 0.5), _gaps(vals))
        ga = matmul(matmul(vecs, inner), mT(vecs))
        return [ga]
    return vjp


def _offdiag(x):
    return sub(x, mul(x, eye_like(x)))


def _eigh_jvp(part: int):
    # P = V^T dA V: dL = diag(P), dV = V (P / (l_j - l_i)), zero diagonal
    def jvp(t, ins, out, params):
        if t[0] is None:
            return None
        a, lo = ins[0], params["lower"]
        vecs = bind(P.linalg_eigh_vecs, a, lower=lo)
        pm = matmul(matmul(mT(vecs), t[0]), vecs)
        if part == 0:
            return diagonal(pm)
        vals = bind(P.linalg_eigh_vals, a, lower=lo)
        return matmul(vecs, _offdiag(div(pm, _gaps(vals))))
    return jvp


for _i, _name in enumerate(("linalg_eigh_vals", "linalg_eigh_vecs")):
    P.register(Primitive(_name, "extern", _infer_eigh(_i),
                         (lambda i: lapack("linalg.eigh", lambda a, lower: _eigh(a, lower)[i],
                                           "did not converge"))(_i),
                         vjp=_eigh_vjp(_i), jvp=_eigh_jvp(_i), saves=(0,),
                         params={"lower": "bool"}, arity=1, batch=_batch_all))


# -- SVD --------------------------------------------------------------------------------------
def _infer_svd(part: int):
    def infer(name, avals, full):
        check_matrix(name, avals[0], square=False)
        a = avals[0]
        m, n = a.shape[-2], a.shape[-1]
        k = min(m, n)
        lead = a.shape[:-2]
        shape = (lead + (m, m if full else k), lead + (k,), lead + (n if full else k, n))[part]
        return Aval(shape, a.dtype)
    return infer


def _svd(a, full):
    return _factor("svd", a, (full,), lambda x: np.linalg.svd(x, full_matrices=full))


def _svd_vjp(part: int):
    def vjp(g, ins, out, params, need):
        a = ins[0]
        m, n = a.shape[-2], a.shape[-1]
        k = min(m, n)
        u = bind(P.linalg_svd_u, a, full=False)
        s = bind(P.linalg_svd_s, a, full=False)
        vh = bind(P.linalg_svd_vh, a, full=False)
        if part == 1:
            return [matmul(mul(u, _row(g, u.shape)), vh)]
        s2 = mul(s, s)
        if part == 0:
            gu = _take_cols(g, 0, k) if params["full"] and m > k else g
            j = matmul(mT(u), gu)
            inner = mul(div(sub(j, mT(j)), _gaps(s2)), _row(s, j.shape))
            ga = matmul(matmul(u, inner), vh)
            if m > n:
                proj = sub(gu, matmul(u, j))                   # (I - U U^T) gU
                ga = add(ga, matmul(div(proj, _row(s, proj.shape)), vh))
            return [ga]
        gvh = _take_rows(g, 0, k) if params["full"] and n > k else g
        v = mT(vh)
        gv = mT(gvh)
        kk = matmul(vh, gv)
        inner = mul(_col(s, kk.shape), div(sub(kk, mT(kk)), _gaps(s2)))
        ga = matmul(matmul(u, inner), vh)
        if n > m:
            proj = sub(gv, matmul(v, kk))                      # (I - V V^T) gV
            ga = add(ga, matmul(div(u, _row(s, u.shape)), mT(proj)))
        return [ga]
    return vjp


def _row(s, shape):
    """s [..., k] as every row of a [..., r, k] matrix (scales columns)."""
    lead, k = tuple(s.shape[:-1]), s.shape[-1]
    return broadcast(reshape(s, lead + (1, k)), tuple(shape))


def _col(s, shape):
    """s [..., k] as every column of a [..., k, c] matrix (scales rows)."""
    lead, k = tuple(s.shape[:-1]), s.shape[-1]
    return broadcast(reshape(s, lead + (k, 1)), tuple(shape))


def _svd_jvp(part: int):
    # dP = U^T dA V: dS = diag(dP); dU = U (F o (dP S + S dP^T)) + (I - U U^T) dA V S^-1;
    # dV = V (F o (S dP + dP^T S)) + (I - V V^T) dA^T U S^-1, F_ij = 1/(s_j^2 - s_i^2)
    def jvp(t, ins, out, params):
        if t[0] is None:
            return None
        a, da = ins[0], t[0]
        m, n = a.shape[-2], a.shape[-1]
        if part != 1 and params["full"] and m != n:
            raise op_error("linalg.svd", "forward-mode derivatives of U and Vh need "
                           "full_matrices=False for non-square input, got "
                           f"{list(a.shape)}", NotImplementedError)
        u = bind(P.linalg_svd_u, a, full=False)
        s = bind(P.linalg_svd_s, a, full=False)
        vh = bind(P.linalg_svd_vh, a, full=False)
        v = mT(vh)
        dp = matmul(matmul(mT(u), da), v)
        if part == 1:
            return diagonal(dp)
        gaps = _gaps(mul(s, s))
        srow, scol = _row(s, dp.shape), _col(s, dp.shape)
        if part == 0:
            d = matmul(u, _offdiag(div(add(mul(dp, srow), mul(scol, mT(dp))), gaps)))
            if m > n:
                dav = matmul(da, v)
                d = add(d, div(sub(dav, matmul(u, matmul(mT(u), dav))), _row(s, dav.shape)))
            return d
        d = matmul(v, _offdiag(div(add(mul(scol, dp), mul(mT(dp), srow)), gaps)))
        if n > m:
            dau = matmul(mT(da), u)
            d = add(d, div(sub(dau, matmul(v, matmul(vh, dau))), _row(s, dau.shape)))
        return mT(d)
    return jvp


for _i, _name in enumerate(("linalg_svd_u", "linalg_svd_s", "linalg_svd_vh")):
    P.register(Primitive(_name, "extern", _infer_svd(_i),
                         (lambda i: lapack("linalg.svd", lambda a, full: _svd(a, full)[i],
                                           "did not converge"))(_i),
                         vjp=_svd_vjp(_i), jvp=_svd_jvp(_i), saves=(0,),
                         params={"full": "bool"}, arity=1, batch=_batch_all))


# -- pseudo-inverse ---------------------------------------------------------------------------
def _infer_pinv(name, avals, rtol, atol):
    check_matrix(name, avals[0], square=False)
    a = avals[0]
    return Aval(a.shape[:-2] + (a.shape[-1], a.shape[-2]), a.dtype)


def _pinv_impl(a, rtol, atol):
    m, n = a.shape[-2], a.shape[-1]
    if m == 0 or n == 0:
        return np.swapaxes(a, -1, -2).copy()            # (empty; no host array for CuPy)
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    cut = np.maximum(atol, rtol * s[..., :1])
    sinv = np.where(s > cut, 1 / np.where(s > cut, s, 1), 0).astype(a.dtype)
    return np.swapaxes(vh, -1, -2) @ (sinv[..., :, None] * np.swapaxes(u, -1, -2))


def _pinv_vjp(g, ins, out, params, need):
    # dX = -X dA X + X X^T dA^T (I - A X) + (I - X A) dA^T X^T X, X = A^+
    a, x = ins[0], out
    xt = mT(x)
    t1 = neg(matmul(matmul(xt, g), xt))
    t2 = sub(matmul(mT(g), matmul(x, xt)), matmul(matmul(a, x), matmul(mT(g), matmul(x, xt))))
    xtx = matmul(xt, x)
    t3 = sub(matmul(xtx, mT(g)), matmul(matmul(xtx, mT(g)), matmul(x, a)))
    return [add(add(t1, t2), t3)]


def _pinv_jvp(t, ins, out, params):
    if t[0] is None:
        return None
    a, x, da = ins[0], out, t[0]
    xda = matmul(x, da)
    t1 = neg(matmul(xda, x))
    t2 = matmul(matmul(x, mT(x)), sub(mT(da), matmul(matmul(mT(da), a), x)))
    t3 = matmul(sub(mT(da), matmul(matmul(x, a), mT(da))), matmul(mT(x), x))
    return add(add(t1, t2), t3)


P.register(Primitive("linalg_pinv", "extern", _infer_pinv,
                     lapack("linalg.pinv", _pinv_impl, "has no SVD (did not converge)"),
                     vjp=_pinv_vjp, jvp=_pinv_jvp, saves=(0,), save_out=True,
                     params={"rtol": "float", "atol": "float"}, arity=1, batch=_batch_all))
