"""argsort: the int64 positions that sort each row along one axis, ascending or descending,
always stable (equal elements keep their order, in both directions), with NaN sorting as the
largest value (last ascending, first descending), as PyTorch. sort, topk and their gradients
are built on it in the tracer: the values are a gather at these positions, so their gradient
is the gather's adjoint, a scatter-add.

Lowering: an *extern* primitive (kind "extern"): the code generators do not generate it; the
CPU backend calls this NumPy implementation between native segments (as it calls BLAS for
matmul), the CUDA backend calls it on CuPy arrays (CuPy's stable sort); its operand is
materialized first. Descending order is the ascending order of
the reversed row, reversed, which keeps ties stable and puts NaN first without negating
(negation would overflow the smallest integer).
"""
from __future__ import annotations

import numpy as np

from . import dtypes as dt
from .batching import batch_axes_param
from .core import Aval
from .primitives import P, Primitive, op_error


def _infer(name: str, avals: list[Aval], axis: int, descending: bool) -> Aval:
    a = avals[0]
    if not 0 <= axis < a.ndim:
        raise op_error(name, f"invalid axis {axis} for {a}", IndexError)
    return Aval(a.shape, dt.i64)


def _impl(x, axis, descending):
    if x.dtype in dt.HALF_NP:          # compare in float32: every 16-bit value is exact there
        x = x.astype(np.float32)
    if not descending:
        return np.argsort(x, axis=axis, kind="stable").astype(np.int64)
    n = x.shape[axis]
    rev = np.argsort(np.flip(x, axis), axis=axis, kind="stable")
    return np.flip((n - 1) - rev, axis).astype(np.int64, order="C")


P.register(Primitive("argsort", "extern", _infer, _impl, vjp=lambda g, i, o, p, n: [None],
                     jvp=lambda t, i, o, p: None,
                     params={"axis": "int", "descending": "bool"}, arity=1,
                     batch=batch_axes_param("axis")))
