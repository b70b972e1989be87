"""`tj.matmul` / `a @ b`: NumPy's matmul rules (1-D operands, broadcast batches, promotion) on
the strict matmul primitive, the lean eager path for two host matrices, and torch's node names.
Re-exported by ops.py, the namespace the op modules call (`ops.matmul`)."""
from __future__ import annotations

import numpy as np

from ..ir import dtypes as dt
from ..ir.primitives import P, bind
from .autocast import LOWER, autocast_op
from .matmul_saves import saved_copies
from .node_names import matmul_node_name, rename
from .operands import _err, _fmt, as_tensor, result_dtype
from .shape_ops import broadcast_to, reshape
from .state import SPECIAL_MODES
from .tensor_base import SUBCLASSES, TensorBase as Tensor


def matmul(a, b) -> Tensor:
    """a @ b. With no autocast region (nor other mode) open anywhere (state.SPECIAL_MODES),
    without autocast's wrapper, which would only pass the call through (one frame less for
    an RNN's x @ W.T)."""
    return _matmul(a, b) if SPECIAL_MODES[0] else _matmul_body(a, b)


def _matmul_body(a, b) -> Tensor:
    if type(a) in SUBCLASSES and type(b) in SUBCLASSES:
        da, db = a._data, b._data
        if type(da) is np.ndarray and type(db) is np.ndarray and da.ndim == 2 == db.ndim and \
                da.dtype == db.dtype and da.dtype.kind != "b" and da.shape[1] == db.shape[0]:
            # two host matrices of one dtype (an RNN's x @ W.T): nothing to promote, reshape
            # or broadcast, and the shapes align; the lean eager path applies the primitive
            return a.__tj_bind__(P.matmul, (a, b), {})
    d = result_dtype(a, b)
    if d is dt.bool_:
        d = dt.i64
    like = next((x for x in (a, b) if isinstance(x, Tensor) and x._traced), None)
    a, b = as_tensor(a, d, like), as_tensor(b, d, like)
    if a.ndim == 0 or b.ndim == 0:
        raise _err("matmul", f"both operands need at least one dimension: {_fmt(a)} @ {_fmt(b)}")
    va, vb = a.ndim == 1, b.ndim == 1
    x = reshape(a, (1,) + a.shape) if va else a
    y = reshape(b, b.shape + (1,)) if vb else b
    if x.shape[-1] != y.shape[-2]:
        raise _err("matmul", f"shapes do not align: {_fmt(a)} @ {_fmt(b)} "
                   f"({x.shape[-1]} != {y.shape[-2]})")
    if x.ndim == 2 and y.ndim == 2:      # no batch (np.broadcast_shapes costs ~5 us)
        out = bind(P.matmul, x, y)
    else:
        try:
            batch = np.broadcast_shapes(x.shape[:-2], y.shape[:-2])
        except ValueError:
            raise _err("matmul", f"batch dimensions do not broadcast: {_fmt(a)} @ {_fmt(b)}") \
                from None
        if like is None:    # eager: save copies where torch's reshapes copy (matmul_saves)
            x, y = saved_copies(x, y, a.ndim, b.ndim, batch)
        x = broadcast_to(x, batch + x.shape[-2:])
        y = broadcast_to(y, batch + y.shape[-2:])
        out = bind(P.matmul, x, y)
    if va or vb:
        shape = out.shape
        if va:
            shape = shape[:-2] + shape[-1:]
        if vb:
            shape = shape[:-1]
        out = reshape(out, shape)
    if out.grad_fn is not None and (a.ndim > 2 or b.ndim > 2 or va or vb):
        # torch names a @ b by the way it computes it (DotBackward0, MvBackward0, ...)
        rename(out, matmul_node_name(a.ndim, b.ndim, a._requires_grad))
    return out


_matmul = autocast_op(LOWER)(_matmul_body)

