"""SGD with momentum, dampening, Nesterov, weight decay and maximize, in torch's order of
operations (torch.optim.SGD's single-tensor implementation)."""
from __future__ import annotations

from typing import Any, Iterable

from ..tracer.state import STATE
from .fused import Precision, f64, run_update
from .optimizer import Optimizer, as_float, zeros_like_param


def sgd_math(flags: tuple, slots: dict, per_param: dict, sc: dict) -> dict:
    """One SGD update of every parameter in `slots` (see fused.py for the calling convention).

    torch: g = -grad if maximize; g = g + wd * p; buf = g on the first step (no dampening),
    else buf = buf * momentum + (1 - dampening) * g; g = g + momentum * buf (Nesterov) or buf;
    p = p + (-lr) * g."""
    maximize, has_wd, has_momentum, nesterov, has_buf = flags
    lr, wd, momentum = f64(sc["lr"]), f64(sc["weight_decay"]), f64(sc["momentum"])
    new_p, new_buf = [], []
    for i, (p, grad) in enumerate(zip(slots["param"], slots["grad"])):
        P = Precision(p.dtype)
        pm, g = P.load(p), P.load(grad)
        if maximize:
            g = -g
        if has_wd:
            g = P.round(g + P.scalar(wd) * pm)
        if has_momentum:
            if has_buf[i]:
                buf = P.round(P.load(slots["momentum_buffer"][i]) * P.scalar(momentum))
                buf = P.round(buf + P.scalar(1 - f64(sc["dampening"])) * g)
            else:
                buf = g
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
        for part in self.by_device_dtype(params):
            slots = {"param": part, "grad": [p.grad for p in part]}
            has_buf: list[bool] = []
            if has_momentum:
                bufs = []
                for p in part:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    has_buf.append(buf is not None)
                    if buf is None:
                        # the first step copies the gradient into a fresh buffer; a compiled
                        # whole step traced now must trace again for the next step's form
                        buf = state["momentum_buffer"] = zeros_like_param(p)
                        if STATE.traces:
                            self._restructured()
                    bufs.append(buf)
                slots["momentum_buffer"] = bufs
            written = ("param", "momentum_buffer") if has_momentum else ("param",)
            run_update("sgd", sgd_math, (maximize, has_wd, has_momentum, nesterov), slots, {},
                       hyper, written, self._used, param_flags=tuple(has_buf))
