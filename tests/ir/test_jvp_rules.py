"""Every primitive's JVP rule: against float64 central differences, and against its VJP by
transposition (<J v, u> = <v, J^T u>), through the IR transforms and the reference
interpreter. The sample table is keyed by the registry, so a new primitive without a sample
(and a JVP rule) fails here."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit  # noqa: F401  (registers every primitive)
from tracejit.ir import P, Aval, Graph, dtypes as dt
from tracejit.ir.autodiff import vjp_graph
from tracejit.ir.forward import jvp_graph, jvp_rule
from tracejit.ir.interpret import interpret

R = np.random.default_rng(0)


def f64(*shape, lo=None):
    a = R.standard_normal(shape)
    return np.abs(a) + lo if lo is not None else a


def distinct(*shape):
    """Values well apart (no ties, no kinks nearby)."""
    n = int(np.prod(shape))
    return (R.permutation(n) * 0.37 - n * 0.15).reshape(shape).astype(np.float64)


def away_from_zero(*shape):
    a = f64(*shape)
    return np.where(np.abs(a) < 0.2, 0.5, a)


def well_posed(*shape):
    """Diagonally dominant matrices (symmetric positive definite read from either triangle)
    with well separated diagonal entries: invertible, factorable, distinct eigenvalues."""
    n = shape[-1]
    return 0.2 * R.standard_normal(shape) + np.eye(shape[-2], n) * np.arange(1.0, n + 1.0) * 2.0


IDX = np.array([[2, 0], [1, 2]], np.int64)
CONV = dict(stride=(1, 2), padding=(1, 0, 0, 1), dilation=(1, 1), groups=1)
CONV3 = dict(stride=(1, 2, 1), padding=(1, 0, 0, 1, 0, 0), dilation=(1, 1, 2), groups=1)

# name -> (operands, params); the float64 operands get tangents
# operands a primitive has no derivative for (as torch): no tangent is sent there
NO_DERIVATIVE = {"zeta": (0,)}
# ops defined on symmetric matrices that read one triangle: their rules (as torch's) take the
# tangent to be symmetric too, so the tangents and the cotangent's partner are symmetrized
SYMMETRIC_INPUT = {"linalg_cholesky", "linalg_eigh_vals", "linalg_eigh_vecs"}


def tangent(name, shape):
    t = R.standard_normal(shape)
    return (t + np.swapaxes(t, -1, -2)) / 2 if name in SYMMETRIC_INPUT else t

SAMPLES = {
    "neg": ([f64(3, 4)], {}),
    "exp": ([f64(3, 4)], {}),
    "log": ([f64(3, 4, lo=0.5)], {}),
    "sin": ([f64(3, 4)], {}),
    "cos": ([f64(3, 4)], {}),
    "tanh": ([f64(3, 4)], {}),
    "sqrt": ([f64(3, 4, lo=0.5)], {}),
    "abs": ([away_from_zero(3, 4)], {}),
    "sign": ([away_from_zero(3, 4)], {}),
    "stop_gradient": ([f64(3, 4)], {}),
    "cast": ([f64(3, 4)], {"dtype": dt.f64}),
    "add": ([f64(3, 4), f64(3, 4)], {}),
    "sub": ([f64(3, 4), f64(3, 4)], {}),
    "mul": ([f64(3, 4), f64(3, 4)], {}),
    "div": ([f64(3, 4), f64(3, 4, lo=0.5)], {}),
    "reciprocal": ([f64(3, 4, lo=0.5)], {}),
    "pow": ([f64(3, 4, lo=0.5), f64(3, 4)], {}),
    "maximum": ([distinct(3, 4), distinct(3, 4) + 0.1], {}),
    "minimum": ([distinct(3, 4), distinct(3, 4) + 0.1], {}),
    "lt": ([f64(3, 4), f64(3, 4)], {}),
    "le": ([f64(3, 4), f64(3, 4)], {}),
    "gt": ([f64(3, 4), f64(3, 4)], {}),
    "ge": ([f64(3, 4), f64(3, 4)], {}),
    "eq": ([f64(3, 4), f64(3, 4)], {}),
    "ne": ([f64(3, 4), f64(3, 4)], {}),
    "where": ([f64(3, 4) > 0, f64(3, 4), f64(3, 4)], {}),
    # integer operands: no tangents (and nothing to differentiate with respect to)
    "bitwise_and": ([np.arange(-6, 6).reshape(3, 4), np.arange(12).reshape(3, 4)], {}),
    "bitwise_or": ([np.arange(-6, 6).reshape(3, 4), np.arange(12).reshape(3, 4)], {}),
    "bitwise_xor": ([np.arange(-6, 6).reshape(3, 4), np.arange(12).reshape(3, 4)], {}),
    "bitwise_not": ([f64(3, 4) > 0], {}),
    "bitwise_left_shift": ([np.arange(-6, 6).reshape(3, 4).astype(np.int8),
                            np.arange(12).reshape(3, 4).astype(np.int8)], {}),
    "bitwise_right_shift": ([np.arange(-6, 6).reshape(3, 4), np.arange(12).reshape(3, 4)], {}),
    "sum": ([f64(3, 4, 2)], {"axes": (0, 2)}),
    "max": ([distinct(3, 4)], {"axes": (1,)}),
    "min": ([distinct(3, 4)], {"axes": (0,)}),
    "reshape": ([f64(3, 4)], {"shape": (2, 6)}),
    "broadcast": ([f64(3, 1)], {"shape": (2, 3, 4)}),
    "transpose": ([f64(2, 3, 4)], {"perm": (2, 0, 1)}),
    "slice": ([f64(5, 6)], {"starts": (1, 0), "stops": (5, 6), "steps": (2, 3)}),
    "pad": ([f64(2, 3)], {"lo": (1, 0), "hi": (0, 2), "interior": (1, 1)}),
    "concatenate": ([f64(2, 3), f64(1, 3), f64(4, 3)], {"axis": 0}),
    "gather": ([f64(3, 4), IDX], {"axis": 0}),
    "take_along": ([f64(3, 4), np.array([3, -1, 0], np.int64)], {"axis": 1}),
    "scatter_add": ([IDX, f64(2, 2, 4)], {"axis": 0, "shape": (3, 4)}),
    "matmul": ([f64(2, 3, 4), f64(2, 4, 5)], {}),
    "constant": ([], {"value": np.arange(3.0)}),
    "floor_divide": ([f64(3, 4) * 3, f64(3, 4, lo=0.5)], {}),
    "remainder": ([np.array([[1.3, -2.6, 4.1]]), np.array([[0.7, 0.9, -1.5]])], {}),
    "fmod": ([np.array([[1.3, -2.6, 4.1]]), np.array([[0.7, 0.9, -1.5]])], {}),
    "iota": ([f64(3, 4)], {"axis": 1}),
    "argmax": ([distinct(3, 4)], {"axis": 1}),
    "argmin": ([distinct(3, 4)], {"axis": 0}),
    "random": ([np.array(7, np.int64), np.array(3, np.int64)],
               {"shape": (3,), "stream": 0, "dtype": dt.f64, "normal": False}),
    "erf": ([f64(3, 4)], {}),
    "erfc": ([f64(3, 4)], {}),
    # ir/prims_libm.py: inside each function's domain, away from poles
    **{n: ([np.tanh(f64(3, 4)) * 0.9], {}) for n in ("tan", "asin", "acos", "atanh")},
    **{n: ([f64(3, 4)], {}) for n in ("atan", "sinh", "cosh", "asinh", "exp2")},
    **{n: ([f64(3, 4, lo=0.3)], {}) for n in ("log2", "log10")},
    "acosh": ([f64(3, 4, lo=1.2)], {}),
    "atan2": ([f64(3, 4), f64(3, 4)], {}),
    "signbit": ([np.array([[0.5, -0.0, 0.0, -np.nan], [-2.0, np.nan, -np.inf, 3.0]])], {}),
    # ir/prims_gamma.py (and lgamma, nextafter of prims_libm.py)
    **{n: ([f64(3, 4, lo=0.2)], {}) for n in ("lgamma", "digamma", "i0", "i0e", "i1", "i1e",
                                              "erfcx")},
    "polygamma": ([f64(3, 4, lo=0.2)], {"n": 2}),
    **{n: ([np.tanh(f64(3, 4)) * 0.45 + 0.5], {}) for n in ("erfinv", "ndtri")},
    "nextafter": ([f64(3, 4), f64(3, 4)], {}),
    "zeta": ([f64(3, 4, lo=1.5), f64(3, 4, lo=0.3)], {}),
    # ir/prims_linalg.py, prims_linalg_spectral.py (extern steps: LAPACK through NumPy)
    **{n: ([well_posed(2, 3, 3)], {}) for n in (
        "linalg_cofactor", "linalg_det", "linalg_detsign", "linalg_logabsdet",
        )},
    **{n: ([well_posed(2, 3, 3)], {"lower": True}) for n in ("linalg_eigh_vals", "linalg_eigh_vecs")},
    **{n: ([well_posed(2, 3, 3)], {"ex": False}) for n in ("linalg_inv", "linalg_cholesky")},
    **{n: ([well_posed(2, 3, 3)], {}) for n in ("linalg_inv_info", "linalg_cholesky_info")},
    "linalg_solve": ([well_posed(2, 3, 3), f64(2, 3, 2)], {}),
    "linalg_trisolve": ([well_posed(2, 3, 3), f64(2, 3, 2)], {"upper": False, "unit": False}),
    **{n: ([well_posed(2, 4, 3)], {"complete": False}) for n in ("linalg_qr_q", "linalg_qr_r")},
    **{n: ([well_posed(2, 4, 3)], {"full": False})
       for n in ("linalg_svd_u", "linalg_svd_s", "linalg_svd_vh")},
    "linalg_pinv": ([well_posed(2, 4, 3)], {"rtol": 0.0, "atol": 0.0}),
    "cumsum": ([f64(3, 4)], {"axis": 1, "reverse": True}),
    # zeros (one and two in a row) exercise the exact formula past the first zero
    "cumprod": ([np.array([[0.5, 0.0, 2.0, -1.5], [1.1, 0.9, 0.0, 0.0], [2.0, -0.7, 1.3, 0.4]])],
                {"axis": 1, "reverse": False}),
    "argsort": ([distinct(3, 4)], {"axis": 1, "descending": False}),
    "argtopk": ([distinct(3, 4)], {"axis": 1, "k": 2, "descending": True}),
    "dist_all_reduce": ([f64(3, 4), f64(3, 4)], {"op": 1}),     # no group: a world of 1
    "dist_all_reduce_start": ([f64(3, 4), f64(3, 4)], {"op": 1}),
    "dist_all_reduce_wait": ([f64(3, 4), np.array(0), f64(3, 4)], {"op": 1}),
    "dist_bucket_start": ([f64(3, 4), f64(5), f64(3, 4)], {"op": 1}),
    "dist_bucket_wait": ([np.array(0), f64(2), f64(3, 4), f64(5)], {"op": 1}),
    "windows": ([f64(2, 5, 6)], {"window": (2, 3), "stride": (1, 2), "dilation": (2, 1)}),
    "window_taps": ([f64(2, 2, 3, 4, 3)], {"hw": (6, 5), "stride": (2, 1), "dilation": (1, 2),
                                           "lo": (1, 0)}),
    "conv2d": ([f64(2, 3, 5, 6), f64(4, 3, 2, 3)], CONV),
    "conv2d_input_grad": ([f64(2, 4, 5, 3), f64(4, 3, 2, 3)], dict(CONV, in_hw=(5, 6))),
    "conv2d_weight_grad": ([f64(2, 3, 5, 6), f64(2, 4, 5, 3)], dict(CONV, kernel=(2, 3))),
    "conv3d": ([f64(2, 3, 3, 5, 4), f64(2, 3, 2, 3, 2)], CONV3),
    "conv3d_input_grad": ([f64(2, 2, 3, 2, 2), f64(2, 3, 2, 3, 2)], dict(CONV3, in_hw=(3, 5, 4))),
    "conv3d_weight_grad": ([f64(2, 3, 3, 5, 4), f64(2, 2, 3, 2, 2)],
                           dict(CONV3, kernel=(2, 3, 2))),
}
NAMES = [p.name for p in P]


def one_op_graph(name: str):
    args, params = SAMPLES[name]
    g = Graph(name)
    ins = [g.add_input(Aval(a.shape, dt.as_dtype(a.dtype)), f"x{i}") for i, a in enumerate(args)]
    g.outputs = [g.emit(P.get(name), ins, params)]
    wrt = [i for i, a in enumerate(args) if a.dtype == np.float64
           and i not in NO_DERIVATIVE.get(name, ())]
    return g, args, wrt


@pytest.mark.parametrize("name", NAMES)
def test_every_primitive_has_a_jvp_rule_and_sample(name):
    assert P.get(name).jvp is not None, f"{name} has no JVP rule"
    assert name in SAMPLES, f"add a sample for the new primitive {name} to this table"


@pytest.mark.parametrize("name", NAMES)
def test_jvp_matches_central_differences(name):
    g, args, wrt = one_op_graph(name)
    j = jvp_graph(g, wrt)
    ts = [tangent(name, args[i].shape) for i in wrt]
    out, *touts = interpret(j, args + ts)
    np.testing.assert_allclose(out, interpret(g, args)[0])
    if not g.outputs[0].dtype.is_float:
        assert touts == []                  # integer and bool results have no tangent
        return
    (tout,) = touts
    eps = 1e-6

    def at(s):
        moved = list(args)
        for i, t in zip(wrt, ts):
            moved[i] = args[i] + s * t
        return interpret(g, moved)[0]
    fd = (at(eps) - at(-eps)) / (2 * eps)
    if name == "stop_gradient":           # the identity whose derivative is zero by definition
        fd = np.zeros_like(fd)
    np.testing.assert_allclose(tout, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_jvp_is_the_transpose_of_vjp(name):
    g, args, wrt = one_op_graph(name)
    if not wrt or not g.outputs[0].dtype.is_float:
        return
    v = [tangent(name, args[i].shape) for i in wrt]
    u = R.standard_normal(g.outputs[0].shape)
    jv = interpret(jvp_graph(g, wrt), args + v)[1]
    jtu = interpret(vjp_graph(g, wrt), args + [u])[1:]
    lhs = np.sum(jv * u)
    rhs = sum(np.sum(a * b) for a, b in zip(v, jtu))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)


def test_symbolic_zero_tangents_are_not_materialized():
    g = Graph("f")
    x = g.add_input(Aval((3,), dt.f64), "x")
    y = g.add_input(Aval((3,), dt.f64), "y")
    g.outputs = [g.emit(P.mul, [g.emit(P.exp, [x], {}), y], {})]
    j = jvp_graph(g, [0])            # no tangent for y: mul's rule gets None for it
    names = [i.prim.name for i in j.instrs]
    # exp's rule, the primal product and t_x * y: no zero tangent for y, no t_y * x
    assert names == ["exp", "mul", "mul", "mul"], j.as_text()


def test_jvp_rule_without_tangents_is_none_and_ints_have_none():
    x = np.arange(3.0)
    assert jvp_rule(P.exp, [None], [x], np.exp(x), {}) is None
    i = np.arange(3)
    assert jvp_rule(P.neg, [i], [i], -i, {}) is None


def test_cumprod_second_order_exact_at_zeros():
    """The tangent's own derivative (forward over forward) at a row with zeros matches
    central differences of the first-order tangent."""
    g, args, wrt = one_op_graph("cumprod")
    j = jvp_graph(g, wrt)
    jj = jvp_graph(j, [0, 1])
    x = args[0]
    t, s, s2 = (R.standard_normal(x.shape) for _ in range(3))
    got = interpret(jj, [x, t, s, s2])[3]
    eps = 1e-6
    fd = (interpret(j, [x + eps * s, t + eps * s2])[1]
          - interpret(j, [x - eps * s, t - eps * s2])[1]) / (2 * eps)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("constant", "random")])
def test_jvp_graphs_compile_with_llvm(name):
    """Each primitive's JVP graph, compiled by the LLVM backend like any graph, agrees with
    the reference interpreter."""
    from tracejit.ir.verify import verify
    from tracejit.runtime.backend import get_backend
    g, args, wrt = one_op_graph(name)
    j = verify(jvp_graph(g, wrt))
    ins = args + [R.standard_normal(args[i].shape) for i in wrt]
    got = get_backend("llvm").compile(j).run([np.ascontiguousarray(a) for a in ins])
    for a, b in zip(got, interpret(j, ins)):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-12, atol=1e-12)
