"""The lean eager path: a primitive applied to concrete arrays, with no tracing, no device
lookups and no per-call shape inference.

Everything here is derived from the one registry: the output type comes from the primitive's
own `infer` rule (run once per (primitive, params, input shapes and dtypes) and cached), and
the values from its `impl`. `Arr` is what flows through a backward pass that records nothing
(no create_graph): the registry's VJP rules bind their primitives to it, which runs them
straight on the arrays. Large CPU arrays may go to a compiled kernel instead of NumPy when the
runtime has registered a provider (see `set_kernel_provider`)."""
from __future__ import annotations

import contextvars
from typing import Any, Callable

import numpy as np

from ..devices import cupy_module, device_of, is_gpu_array, to_device
from ..ir import dtypes as dt
from ..ir.core import Aval, user_location
from ..ir.primitives import broadcast

NP_TO_DTYPE = dt.NP_TO_DTYPE

# NumPy's floating-point error mode lives in a context variable; setting it to "ignore all"
# costs ~0.1 us, where entering np.errstate costs ~1.5 us (most of a small op's time). The
# private variable is looked up once; without it (another NumPy) np.errstate is used.
try:
    from numpy._core import _ufunc_config as _ufc
    _ERR_VAR: contextvars.ContextVar | None = _ufc._extobj_contextvar
    with np.errstate(all="ignore"):
        _IGNORE = _ERR_VAR.get()
except (ImportError, AttributeError):       # pragma: no cover - other NumPy versions
    _ERR_VAR = None
    _IGNORE = None
_NO_VAR = object()          # _ERR_SET's token without the context variable: use np.errstate
# (the bound methods, looked up once: an eager op sets and resets the mode)
_ERR_SET = _ERR_VAR.set if _ERR_VAR is not None else lambda value: _NO_VAR
_ERR_RESET = _ERR_VAR.reset if _ERR_VAR is not None else None


def quiet_call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs) with NumPy's floating-point warnings off (inf and nan are values)."""
    if _ERR_VAR is None:                    # pragma: no cover
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)
    tok = _ERR_VAR.set(_IGNORE)
    try:
        return fn(*args, **kwargs)
    finally:
        _ERR_VAR.reset(tok)


# (prim, params items, (shape, np dtype) per operand) -> (normalized params, output np dtype,
# output is float, operand Avals). Bounded: cleared when full (shapes of a workload repeat, so
# it refills with the live ones).
_INFER: dict = {}
_INFER_MAX = 8192


def infer(prim, params: dict, data: list) -> tuple[dict, np.dtype, bool, tuple]:
    """The normalized params, output NumPy dtype, whether it is a float, and the operands'
    Avals, for `prim` applied to arrays `data`: the registry's infer rule, cached. The Avals
    tuple is shared by every application with the same key: a backward node keeps it instead
    of building its own (fewer objects per op for the garbage collector to count)."""
    # dtype.num: hashing np.dtype objects is slow; the number names the type (byte order
    # aside, and NumPy computes either byte order right)
    try:
        pk = tuple(params.items()) if params else ()
        if len(data) == 2:
            a, b = data
            key = (prim, pk, a.shape, a.dtype.num, b.shape, b.dtype.num)
        elif len(data) == 1:
            a = data[0]
            key = (prim, pk, a.shape, a.dtype.num)
        else:
            key = (prim, pk, *[(d.shape, d.dtype.num) for d in data])
        hit = _INFER.get(key)
    except TypeError:                       # an unhashable param: a list (kept as a tuple)
        key = hit = None                    # or an array (not cached)
        if all(type(v) is not np.ndarray for v in params.values()):
            pk = tuple((k, tuple(v) if type(v) is list else v) for k, v in params.items())
            try:
                key = (prim, pk, *[(d.shape, d.dtype.num) for d in data])
                hit = _INFER.get(key)
            except TypeError:
                key = None
    if hit is not None:
        return hit
    norm = prim.normalize(params)
    avals = [Aval(d.shape, _dtype_of(prim, d)) for d in data]
    aval = prim.infer(list(avals), norm)
    # shared by the cache entry's applications: a tuple that also holds their VJP plans
    avals = SharedAvals(avals) if key is not None else tuple(avals)
    hit = (norm, aval.dtype.np, aval.dtype.is_float, avals)
    if key is not None:
        if len(_INFER) >= _INFER_MAX:
            _INFER.clear()
        _INFER[key] = hit
    return hit


class SharedAvals(tuple):
    """The operands' Avals of one inference-cache entry (one primitive, params, operand shapes
    and dtypes), shared by every node recorded from it; `plans` holds the VJP plans traced for
    them per `need` pattern (vjp_plans.py)."""

    def __init__(self, avals) -> None:
        self.plans: dict = {}


def _dtype_of(prim, d) -> dt.DType:
    try:
        return NP_TO_DTYPE[d.dtype]
    except KeyError:
        raise TypeError(f"{prim.name}: unsupported array dtype {d.dtype} "
                        f"(at {user_location()})") from None


def infer_cache_clear() -> None:
    _INFER.clear()


# -- compiled kernels for large arrays --------------------------------------------------------
# The runtime registers a provider at import (the tracer never imports the runtime):
# provider(prim, data, params, out_np_dtype) -> the result array, or None to use NumPy.
_PROVIDER: list = [None, 0]      # the provider, and the operand size below which it is not asked


def set_kernel_provider(provider: Callable | None, min_elements: int = 0) -> None:
    """Route eager CPU ops whose first operand has at least `min_elements` elements through
    `provider` (None: NumPy only). The first operand only: the ops a kernel serves are
    elementwise (operands of one shape) and reductions (one operand), and one size test per
    op is what every small op pays."""
    _PROVIDER[0] = provider
    _PROVIDER[1] = min_elements


def kernel_provider() -> Callable | None:
    return _PROVIDER[0]


def run_impl(prim, data: list, params: dict, out_np: np.dtype) -> Any:
    """The primitive's value on `data`: a fresh array, or a read-only view of an input (a
    lazy copy, copied before anything writes to it)."""
    provider = _PROVIDER[0]
    if provider is not None and data and data[0].size >= _PROVIDER[1]:
        res = provider(prim, data, params, out_np)
        if res is not None:
            return res
    # shape ops only move data: no floating-point warning to silence (most of a small
    # slice's or transpose's cost was the error-mode switch)
    impl = prim.impl
    tok = _ERR_SET(_IGNORE) if prim.kind != "shape" else None
    try:
        if tok is _NO_VAR:      # (another NumPy: its errstate context)
            res = quiet_call(impl, *data, **params)
        elif len(data) == 2 and not params:     # (most ops: no * or ** to unpack)
            res = impl(data[0], data[1])
        else:
            res = impl(*data, **params) if params else impl(*data)
    except (IndexError, ValueError, TypeError) as e:
        # a new exception of the same built-in family, chained: the original may be a
        # subclass whose constructor takes other arguments
        base = next(c for c in (IndexError, ValueError, TypeError) if isinstance(e, c))
        msg = str(e) if str(e).startswith(f"{prim.name}: ") else f"{prim.name}: {e}"
        raise base(f"{msg} (at {user_location()})") from e
    finally:
        if tok is not None and tok is not _NO_VAR:
            _ERR_RESET(tok)
    if type(res) is not np.ndarray:
        if is_gpu_array(res):                # CuPy results stay on the GPU
            return res if res.dtype == out_np else res.astype(out_np)
        res = np.asarray(res)
    rd = res.dtype
    if rd is not out_np and rd != out_np:
        res = res.astype(out_np)
    elif res.base is not None and res.flags.writeable:
        # a view of an input (reshape, slice, ...) is a lazy copy: read-only, and copied
        # before anything writes to it or aliases it (see Tensor.detach, inplace)
        res.flags.writeable = False
    return res


def device_const(array: np.ndarray, like: Any) -> Any:
    """A constant array on `like`'s device. On the GPU a 0-d constant (a VJP rule's 1.0, a
    Python number) is a fill kernel on the device, not a copy from host memory: such a copy
    waits for the host, and the autograd engine must never make the host wait."""
    if type(like) is np.ndarray:
        return array
    if array.ndim == 0 and is_gpu_array(like) and array.dtype != dt.bf16.np:
        cp = cupy_module()
        with cp.cuda.Device(like.device.id):
            return cp.full((), array.item(), dtype=array.dtype)
    return to_device(array, device_of(like))


class Arr:
    """An array flowing through a backward pass that records nothing. VJP rules read its
    shape and dtype and bind primitives to it, which runs them directly on the array."""

    __slots__ = ("_data",)

    def __init__(self, data: Any) -> None:
        self._data = data

    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    @property
    def dtype(self) -> dt.DType:
        return NP_TO_DTYPE[self._data.dtype]

    @property
    def ndim(self) -> int:
        return self._data.ndim

    def __tj_bind__(self, prim, args, params) -> "Arr":
        # (a rule's binary op, spelled out: a list comprehension is a call of its own)
        data = [args[0]._data, args[1]._data] if len(args) == 2 else [a._data for a in args]
        params, out_np, _, _ = infer(prim, params, data)
        return Arr(run_impl(prim, data, params, out_np))

    def __tj_const__(self, array: np.ndarray) -> "Arr":
        return Arr(device_const(array, self._data))

    def __tj_full__(self, value) -> "Arr":
        """An array of this one's shape and dtype filled with the Python number `value` (a
        rule's 0.0 or 1.0): one fill, where a constant and a broadcast were two primitives."""
        d = self._data
        if type(d) is np.ndarray:
            a = np.empty(d.shape, d.dtype)      # (np.full costs twice an empty array's fill)
            a.fill(value)
            return Arr(a)
        # on the GPU: a device constant (no host wait, see device_const) broadcast by the
        # registry's primitive, as for any other operand
        return broadcast(self.__tj_const__(np.array(value, dtype=d.dtype)), d.shape)

    def __repr__(self) -> str:
        return f"Arr({self.dtype.name}{list(self.shape)})"
