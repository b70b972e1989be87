"""Dynamic loss scaling (PyTorch's torch.amp.GradScaler), with its exact scale sequence.

The scale is a float32 0-d tensor on the host: every change of it goes through float32 rounding
as torch's float32 scale tensor does, so `get_scale()` agrees with torch's bit for bit. Eagerly,
the inf/NaN check of the gradients is one reduction per gradient and one host read per
`unscale_` (torch reads its found_inf tensor in `step` as well).

Inside a compiled function (a whole AMP training step) nothing is read into Python: found_inf
stays a traced 0-d bool, the optimizer's writes keep their old values where it is true (see
optim/fused.py `skipped_if`, torch's masked step), and update() computes the next scale and
growth tracker with `where`, written back into the scaler's own 0-d tensors after each call. So
one trace serves good steps, skipped steps, back-off and growth alike."""
from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable
from enum import Enum
from typing import Any

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import user_location
from ..devices import cuda_available
from ..optim.fused import skipped_if
from ..optim.optimizer import Optimizer, host_scalar
from ..tracer import ops
from ..tracer.state import STATE, no_grad
from ..tracer.tensor import Tensor

__all__ = ["GradScaler", "OptState"]


class OptState(Enum):
    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _fresh_state() -> dict[str, Any]:
    return {"stage": OptState.READY, "found_inf": None}


def _f32(x: float) -> float:
    with np.errstate(over="ignore"):      # a grown scale may overflow to inf: update() checks
        return float(np.float32(x))


class GradScaler:
    """`scaler.scale(loss).backward(); scaler.step(opt); scaler.update()`.

    scale(outputs) multiplies by the current scale; unscale_(opt) divides the gradients of
    opt's parameters by it and notes whether any is inf/NaN; step(opt) unscales (unless done)
    and calls opt.step() only if every gradient was finite; update() multiplies the scale by
    backoff_factor after a skipped step, and by growth_factor after growth_interval
    consecutive good steps. device="cuda" without a GPU warns and disables the scaler (as
    torch); a disabled scaler passes everything through."""

    def __init__(self, device: str = "cuda", init_scale: float = 2.0 ** 16,
                 growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True) -> None:
        self._device = device
        self._enabled = bool(enabled)
        if device == "cuda" and self._enabled and not cuda_available():
            warnings.warn("tj.amp.GradScaler is enabled, but CUDA is not available.  "
                          "Disabling.", stacklevel=2)
            self._enabled = False
        if self._enabled:
            if growth_factor <= 1.0:
                raise AssertionError("The growth factor must be > 1.0.")
            if backoff_factor >= 1.0:
                raise AssertionError("The backoff factor must be < 1.0.")
        self._init_scale = float(init_scale)
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = int(growth_interval)
        self._init_growth_tracker = 0
        # the scale and the growth tracker as 0-d tensors, updated in place: a compiled
        # function captures them and reads (and writes back) their current values every call;
        # None until the first scale() (torch's lazy init)
        self._scale_t: Tensor | None = None
        self._tracker_t: Tensor | None = None
        self._per_optimizer_states: dict[int, dict[str, Any]] = defaultdict(_fresh_state)

    # -- scaling ---------------------------------------------------------------------------
    @property
    def _scale(self) -> float | None:
        return None if self._scale_t is None else float(self._scale_t._data)

    @property
    def _growth_tracker(self) -> int | None:
        return None if self._tracker_t is None else int(self._tracker_t._data)

    def _check_scale_growth_tracker(self, funcname: str) -> None:
        if self._scale_t is None or self._tracker_t is None:
            raise AssertionError(f"Attempted {funcname} but _scale is None.  This may indicate "
                                 f"your script did not use scaler.scale(loss or outputs) "
                                 f"earlier in the iteration.")

    def _lazy_init(self) -> None:
        if self._scale_t is None:
            self._scale_t = host_scalar(_f32(self._init_scale), np.float32)
            self._tracker_t = host_scalar(self._init_growth_tracker, np.int32)

    def _set_scale(self, value: float) -> None:
        self._scale_t._data[...] = _f32(value)
        self._scale_t._version[0] += 1

    def _set_tracker(self, value: int) -> None:
        self._tracker_t._data[...] = value
        self._tracker_t._version[0] += 1

    def scale(self, outputs):
        """outputs (a Tensor, or a list/tuple/iterable of them) times the current scale. The
        product keeps each output's dtype (torch's 0-d float32 scale does not promote)."""
        if not self._enabled:
            return outputs
        self._lazy_init()
        if isinstance(outputs, Tensor):
            return self._times_scale(outputs)
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(v) for v in outputs)
        if isinstance(outputs, Iterable):
            return map(self.scale, outputs)
        raise ValueError("outputs must be a Tensor or an iterable of Tensors")

    def _times_scale(self, t: Tensor) -> Tensor:
        d = t.dtype if t.dtype.is_float else dt.f32
        if t._traced:      # not a constant of the trace: the scale changes between calls
            return ops.mul(t, ops.cast(self._scale_t, d))
        if t.dtype.is_float:
            return ops.mul(t, self._scale)       # a Python float: computed in t's dtype
        return ops.mul(t, ops.as_tensor(self._scale, dt.f32, like=t))

    # -- unscaling and stepping --------------------------------------------------------------
    def _unscale_grads_(self, optimizer, inv_scale: float | Tensor,
                        allow_fp16: bool) -> bool | Tensor:
        """Multiply every gradient by inv_scale in place; True if any was inf or NaN (inside a
        trace: inv_scale and the answer are traced 0-d tensors, never read into Python)."""
        checks = []
        with no_grad():
            for group in optimizer.param_groups:
                for param in group["params"]:
                    if not isinstance(param, Tensor):
                        raise AssertionError(f"expected param to be a Tensor, got "
                                             f"{type(param).__name__}")
                    g = param.grad
                    if g is None:
                        continue
                    if not allow_fp16 and g.dtype is dt.f16:
                        raise ValueError("Attempting to unscale FP16 gradients.")
                    # inf * 0 and NaN * 0 are NaN, finite * 0 is 0: the sum is NaN iff some
                    # element is not finite (read before the multiply, as torch's kernel)
                    checks.append(ops.cast(ops.sum(ops.mul(g, 0.0)), dt.f32))
                    g.mul_(ops.cast(inv_scale, g.dtype) if isinstance(inv_scale, Tensor)
                           else inv_scale)
        traced = STATE.traces
        if not checks:
            return ops.as_tensor(False) if traced else False
        total = checks[0]
        for c in checks[1:]:
            total = ops.add(total, c)
        if traced:
            return ops.ne(total, total)         # NaN iff some gradient was not finite
        return not np.isfinite(float(total.item()))

    def unscale_(self, optimizer) -> None:
        """Divide opt's gradients by the scale now (e.g. before clip_grad_norm_). Once per
        optimizer per update()."""
        if not self._enabled:
            return
        self._check_scale_growth_tracker("unscale_")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since "
                               "the last update().")
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        # torch: the float32 scale's reciprocal computed in double, rounded to float32
        if STATE.traces:
            inv_scale = ops.cast(ops.div(1.0, ops.cast(self._scale_t, dt.f64)), dt.f32)
        else:
            inv_scale = _f32(1.0 / float(self._scale))
        state["found_inf"] = self._unscale_grads_(optimizer, inv_scale, False)
        state["stage"] = OptState.UNSCALED

    def step(self, optimizer, *args: Any, **kwargs: Any):
        """Unscale (unless unscale_ was called) and run optimizer.step(*args, **kwargs) if no
        gradient is inf/NaN; returns what optimizer.step returned (None if skipped)."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is "
                               "enabled.")
        self._check_scale_growth_tracker("step")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] is OptState.READY:
            self.unscale_(optimizer)
        retval = None
        found = state["found_inf"]
        if isinstance(found, Tensor):
            # inside a trace: step always, and keep the old values where found_inf is true
            if not isinstance(optimizer, Optimizer):
                raise TypeError(f"GradScaler.step inside a compiled function needs a "
                                f"tj.optim optimizer (its step can be skipped without a "
                                f"branch), got {type(optimizer).__name__} "
                                f"(at {user_location()})")
            with skipped_if(found):
                retval = optimizer.step(*args, **kwargs)
        elif not found:
            retval = optimizer.step(*args, **kwargs)
        state["stage"] = OptState.STEPPED
        return retval

    def update(self, new_scale: float | Tensor | None = None) -> None:
        """Set the next scale: new_scale if given, else back off after a skipped step or grow
        after growth_interval good ones (torch's _amp_update_scale_)."""
        if not self._enabled:
            return
        self._check_scale_growth_tracker("update")
        if new_scale is not None:
            if isinstance(new_scale, Tensor):
                if new_scale.numel() != 1 or new_scale.requires_grad:
                    raise AssertionError("new_scale should be a float or a 1-element float "
                                         "Tensor with requires_grad=False.")
                new_scale = float(new_scale.item())
            self._set_scale(new_scale)
        else:
            found = [s["found_inf"] for s in self._per_optimizer_states.values()
                     if s["found_inf"] is not None]
            if not found:
                raise AssertionError("No inf checks were recorded prior to update.")
            if STATE.traces or any(isinstance(f, Tensor) for f in found):
                self._traced_update(found)
            elif any(found):
                self._set_scale(self._scale * self._backoff_factor)
                self._set_tracker(0)
            else:
                successful = self._growth_tracker + 1
                if successful == self._growth_interval:
                    grown = _f32(self._scale * self._growth_factor)
                    if np.isfinite(grown):
                        self._set_scale(grown)
                    self._set_tracker(0)
                else:
                    self._set_tracker(successful)
        self._per_optimizer_states = defaultdict(_fresh_state)

    def _traced_update(self, found: list) -> None:
        """update() inside a trace: the same rule as the eager one, branch-free (the products
        in float64 rounded to float32, as the eager path and torch's float32 scale)."""
        skipped = ops.as_tensor(False)
        for f in found:
            skipped = ops.logical_or(skipped, f)
        with no_grad():
            scale = ops.cast(self._scale_t, dt.f64)
            successful = ops.add(self._tracker_t, 1)
            grow = ops.eq(successful, self._growth_interval)
            grown = ops.cast(ops.mul(scale, self._growth_factor), dt.f32)
            grown = ops.where(ops.ne(ops.sub(grown, grown), 0.0), self._scale_t, grown)
            backed = ops.cast(ops.mul(scale, self._backoff_factor), dt.f32)
            new_scale = ops.where(skipped, backed, ops.where(grow, grown, self._scale_t))
            new_tracker = ops.where(ops.logical_or(skipped, grow), 0, successful)
            self._scale_t.copy_(ops.cast(new_scale, dt.f32))
            self._tracker_t.copy_(ops.cast(new_tracker, dt.i32))

    # -- accessors and state -----------------------------------------------------------------
    def get_scale(self) -> float:
        if not self._enabled:
            return 1.0
        if self._scale_t is None:
            return self._init_scale
        # inside a trace a read is a guard (the trace is redone when the scale changes)
        return float(self._scale_t.item()) if STATE.traces else self._scale

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        self._growth_factor = float(new_factor)

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        self._backoff_factor = float(new_factor)

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        self._growth_interval = int(new_interval)

    def _get_growth_tracker(self) -> int:
        if not self._enabled:
            return 0
        return self._init_growth_tracker if self._growth_tracker is None \
            else self._growth_tracker

    def is_enabled(self) -> bool:
        return self._enabled

    def state_dict(self) -> dict[str, Any]:
        """scale, growth_factor, backoff_factor, growth_interval, _growth_tracker ({} when
        disabled), as torch."""
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval,
                "_growth_tracker": self._get_growth_tracker()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved "
                               "from a disabled instance of GradScaler.")
        self._init_scale = float(state_dict["scale"])
        if self._scale is not None:
            self._set_scale(self._init_scale)
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._init_growth_tracker = int(state_dict["_growth_tracker"])
        if self._tracker_t is not None:
            self._set_tracker(self._init_growth_tracker)
