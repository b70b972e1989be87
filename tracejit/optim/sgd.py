"""SGD with momentum, dampening, Nesterov, weight decay and maximize, in torch's order of
operations (torch.optim.SGD's single-tensor implementation)."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..tracer import ops
from ..tracer.state import STATE, no_grad
from ..tracer.tensor import Tensor
from .fused import Precision, f64, in_skipped_step, load_grad, masked_copy, run_update
from .optimizer import Optimizer, as_float, host_scalar, zeros_like_param

# How a parameter's momentum buffer enters an update (a static flag per parameter):
NO_BUFFER = 0       # torch's first step: the buffer becomes the gradient, undampened
BUFFER = 1          # buf = buf * momentum + (1 - dampening) * g
MAYBE_SET = 2       # made by a step GradScaler may have skipped: a run-time flag picks one


def sgd_math(flags: tuple, slots: dict, per_param: dict, sc: dict) -> dict:
    """One SGD update of every parameter in `slots` (see fused.py for the calling convention).

    torch: g = -grad if maximize; g = g + wd * p; buf = g on the first step (no dampening),
    else buf = buf * momentum + (1 - dampening) * g; g = g + momentum * buf (Nesterov) or buf;
    p = p + (-lr) * g. A buffer whose first step may have been skipped (MAYBE_SET) is
    the damped form where slots['momentum_set'] (0-d bool) says it was set, else g."""
    maximize, has_wd, has_momentum, nesterov, has_buf = flags
    lr, wd, momentum = f64(sc["lr"]), f64(sc["weight_decay"]), f64(sc["momentum"])
    new_p, new_buf = [], []
    for i, (p, grad) in enumerate(zip(slots["param"], slots["grad"])):
        P = Precision(p.dtype)
        pm, g = load_grad(P, p, grad, maximize, wd if has_wd else None)
        if has_momentum:
            if has_buf[i] == NO_BUFFER:
                buf = g
            else:
                damped = P.round(P.load(slots["momentum_buffer"][i]) * P.scalar(momentum))
                damped = P.round(damped + P.scalar(1 - f64(sc["dampening"])) * g)
                buf = damped if has_buf[i] == BUFFER else \
                    ops.where(slots["momentum_set"][i], damped, g)
            new_buf.append(P.out(buf))
            g = P.round(g + P.scalar(momentum) * buf) if nesterov else buf
        new_p.append(P.out(pm + P.scalar(-lr) * g))
    return {"param": new_p, "momentum_buffer": new_buf}


class SGD(Optimizer):
    """torch.optim.SGD: `SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
    nesterov=False, *, maximize=False)`. Each step runs fused (one compiled update per
    (device, dtype) group); `foreach`/`fused` are accepted for compatibility."""

    runtime_keys = ("lr", "weight_decay", "momentum", "dampening")

    def __init__(self, params: Iterable, lr: Any = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: Any = 0, nesterov: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        if as_float(lr) < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if as_float(weight_decay) < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if differentiable:
            raise NotImplementedError("SGD(differentiable=True): tracejit's optimizers do not "
                                      "record the step for autograd")
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize,
                    "foreach": foreach, "differentiable": differentiable, "fused": fused}
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, defaults)
        # Buffers created by a compiled step GradScaler may skip (found_inf is known only when
        # it runs): param -> 0-d bool, true once a step that set the buffer was not skipped.
        # torch has no buffer until its first real step, which does not dampen.
        self._unset: dict[Tensor, Tensor] = {}

    def _settle(self) -> None:
        """Outside a trace: drop the buffers no step ever set (torch has none for them) and
        forget the flags; a compiled step traced with a flag traces again."""
        for p, flag in list(self._unset.items()):
            if not bool(flag.item()):
                self.state[p].pop("momentum_buffer", None)
            del self._unset[p]
            self._restructured()

    def state_dict(self) -> dict[str, Any]:
        if not STATE.traces:
            self._settle()
        return super().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._unset = {}
        super().load_state_dict(state_dict)

    def __getstate__(self) -> dict[str, Any]:
        self._settle()
        return super().__getstate__()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._unset = {}

    def _fix_loaded_group(self, group: dict) -> None:
        for k, v in (("nesterov", False), ("maximize", False), ("foreach", None),
                     ("differentiable", False), ("fused", False)):
            group.setdefault(k, v)

    def _signature(self, group: dict) -> tuple:
        return (bool(group["maximize"]), as_float(group["weight_decay"]) != 0,
                as_float(group["momentum"]) != 0, bool(group["nesterov"]))

    def _hyper_values(self, group: dict) -> dict[str, Any]:
        return {k: group[k] for k in ("lr", "weight_decay", "momentum", "dampening")}

    def _step_group(self, group: dict, params: list) -> None:
        maximize, has_wd, has_momentum, nesterov = self._signature(group)
        hyper = self.hyper(group)
        if self._unset and not STATE.traces:
            self._settle()
        for part in self.by_device_dtype(params):
            slots = {"param": part, "grad": [p.grad for p in part]}
            forms: list[int] = []
            flags: list[Tensor | None] = []
            if has_momentum:
                bufs = []
                for p in part:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    flag = self._unset.get(p)
                    forms.append(NO_BUFFER if buf is None else
                                 BUFFER if flag is None else MAYBE_SET)
                    if buf is None:
                        # the first step copies the gradient into a fresh buffer; a compiled
                        # whole step traced now must trace again for the next step's form
                        buf = state["momentum_buffer"] = zeros_like_param(p)
                        if STATE.traces:
                            self._restructured()
                            if in_skipped_step():
                                flag = self._unset[p] = host_scalar(False, np.bool_)
                    bufs.append(buf)
                    flags.append(flag)
                slots["momentum_buffer"] = bufs
                if any(f is not None for f in flags):
                    slots["momentum_set"] = flags
            written = ("param", "momentum_buffer") if has_momentum else ("param",)
            run_update("sgd", sgd_math, (maximize, has_wd, has_momentum, nesterov), slots, {},
                       hyper, written, self._used, param_flags=tuple(forms))
            with no_grad():
                for flag in flags:
                    if flag is not None:        # set unless this step is skipped
                        masked_copy(flag, ops.as_tensor(True))
