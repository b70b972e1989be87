"""Automatic mixed precision (PyTorch's autocast): thread-local autocast state and the one
decorator that op functions carry to follow it.

Under `autocast(device_type, dtype)` an op marked `LOWER` (matmul, linear, ...) casts its
floating-point operands on that device to the low dtype (float16/bfloat16; the 16-bit matmul
accumulates in float32), and an op marked `FP32` (reductions, softmax, norms, losses, exp/log,
pow) widens them to float32. float64 operands are left alone, and so is every other op, which
promotes as usual: this is PyTorch's rule. The casts are ordinary `cast` ops, so eager autograd
differentiates them and a trace records them as explicit casts in the IR.

As in PyTorch, the ops an autocast op runs internally do not autocast again (softmax's exp, the
matmul inside linear): the policy applies at the outermost marked op only."""
from __future__ import annotations

import functools
import threading
import warnings
from typing import Any, Callable

from ..ir import dtypes as dt
from .state import SPECIAL_MODES, special_mode
from .tensor_base import TensorBase as Tensor

LOWER = "lower_precision_fp"
FP32 = "fp32"

DEVICE_TYPES = ("cpu", "cuda")
DEFAULT_DTYPE = {"cpu": dt.bf16, "cuda": dt.f16}
_ELIGIBLE = (dt.f16, dt.bf16, dt.f32)     # float64 never autocasts (as PyTorch)


class _AutocastState(threading.local):
    # (device_type, dtype) pairs of the active autocast regions, sorted: hashable, so a
    # compiled function can key its cache on it; () when autocast is off
    active: tuple = ()


STATE = _AutocastState()


def autocast_key() -> tuple:
    """The autocast state a trace depends on (part of the compile cache key)."""
    return STATE.active


def is_autocast_enabled(device_type: str | None = None) -> bool:
    """Whether autocast is on for `device_type`; no argument means "cuda" (as PyTorch)."""
    dev = "cuda" if device_type is None else device_type
    return any(d == dev for d, _ in STATE.active)


def get_autocast_dtype(device_type: str) -> dt.DType:
    """The dtype autocast casts to on `device_type` (its default when autocast is off)."""
    _check_device_type(device_type)
    for d, t in STATE.active:
        if d == device_type:
            return t
    return DEFAULT_DTYPE[device_type]


def _check_device_type(device_type: str) -> None:
    if device_type not in DEVICE_TYPES:
        raise RuntimeError(f"autocast: unsupported device_type {device_type!r}; expected "
                           f"'cpu' or 'cuda'")


class autocast:
    """`with tj.autocast("cpu"):` or `@tj.autocast("cuda", dtype=tj.float16)`: run the ops
    inside in mixed precision (see the module docstring). dtype defaults to bfloat16 on the
    CPU and float16 on CUDA. `enabled=False` turns autocast off for the block (also inside an
    enclosing autocast region). `cache_enabled` is accepted for PyTorch's signature: casts are
    not cached (a traced function's casts are common subexpressions anyway)."""

    def __init__(self, device_type: str, dtype: Any = None, enabled: bool = True,
                 cache_enabled: bool | None = None) -> None:
        if not isinstance(device_type, str):
            raise TypeError(f"autocast: device_type must be a string ('cpu' or 'cuda'), got "
                            f"{type(device_type).__name__}")
        _check_device_type(device_type)
        self.device_type = device_type
        self.fast_dtype = DEFAULT_DTYPE[device_type] if dtype is None else dt.as_dtype(dtype)
        self._enabled = bool(enabled)
        if self._enabled and self.fast_dtype not in dt.HALF:
            # PyTorch warns and disables autocast for an unsupported dtype
            warnings.warn(f"In {device_type} autocast, but the target dtype "
                          f"{self.fast_dtype.name} is not supported (use float16 or bfloat16). "
                          f"Disabling autocast.", stacklevel=2)
            self._enabled = False
        self._saved: list[tuple] = []

    def __enter__(self) -> "autocast":
        special_mode(1)
        self._saved.append(STATE.active)
        rest = tuple(p for p in STATE.active if p[0] != self.device_type)
        if self._enabled:
            rest = tuple(sorted(rest + ((self.device_type, self.fast_dtype),),
                                key=lambda p: p[0]))
        STATE.active = rest
        return self

    def __exit__(self, *exc) -> bool:
        STATE.active = self._saved.pop()
        special_mode(-1)
        return False

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with autocast(self.device_type, self.fast_dtype, self._enabled):
                return fn(*args, **kwargs)
        return wrapper


def _target(policy: str, low: dt.DType) -> dt.DType:
    return low if policy == LOWER else dt.f32


def _cast_arg(x: Any, devices: dict, policy: str) -> Any:
    if isinstance(x, Tensor):
        d = x.dtype
        if d in _ELIGIBLE:
            low = devices.get(x.device.type)
            if low is not None:
                want = _target(policy, low)
                if d is not want:
                    # Tensor.astype is ops.cast (this module sits below ops, which uses
                    # the decorator)
                    return x.astype(want)
        return x
    if type(x) in (list, tuple):                  # cat/stack-style tensor lists
        return type(x)(_cast_arg(v, devices, policy) for v in x)
    return x


def atomic(fn: Callable) -> Callable:
    """Run `fn` as one op: the ops it calls inside do not autocast (a composite such as gelu
    or var is one kernel in PyTorch, so its inner pow or sum keep the operands' dtype)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not SPECIAL_MODES[0]:        # (no autocast region in any thread)
            return fn(*args, **kwargs)
        active = STATE.active
        if not active:
            return fn(*args, **kwargs)
        STATE.active = ()
        try:
            return fn(*args, **kwargs)
        finally:
            STATE.active = active
    return wrapper


def autocast_op(policy: str) -> Callable[[Callable], Callable]:
    """Mark an op function as following autocast with `policy` (LOWER or FP32). Costs one
    thread-local read when autocast is off in this thread but some mode is open (see
    state.SPECIAL_MODES), none when no thread has one."""
    if policy not in (LOWER, FP32):
        raise ValueError(f"autocast_op: unknown policy {policy!r}")

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not SPECIAL_MODES[0]:    # (no autocast region in any thread)
                return fn(*args, **kwargs)
            active = STATE.active
            if not active:
                return fn(*args, **kwargs)
            devices = dict(active)
            args = tuple(_cast_arg(a, devices, policy) for a in args)
            kwargs = {k: _cast_arg(v, devices, policy) for k, v in kwargs.items()}
            STATE.active = ()                     # the op's own inner ops do not autocast
            try:
                return fn(*args, **kwargs)
            finally:
                STATE.active = active
        wrapper.autocast_policy = policy
        return wrapper
    return deco
