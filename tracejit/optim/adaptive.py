"""RMSprop, Adagrad and Adadelta in torch's order of operations (torch.optim's single-tensor
implementations): per-element step sizes from running sums of squared gradients. Each step runs
fused like SGD's and Adam's (fused.py), with the hyperparameters as runtime scalars."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..tracer import ops
from ..tracer.state import STATE
from ..tracer.tensor import Tensor
from .fused import Precision, count_step, f64, load_grad, run_update
from .optimizer import Optimizer, as_float, host_scalar, zeros_like_param


def _lerp(P: Precision, start: Tensor, end: Tensor, weight: Any) -> Tensor:
    """torch's lerp: start + w (end - start) for |w| < 0.5, else end - (1 - w)(end - start)."""
    w = P.scalar(weight)
    small = ops.lt(ops.abs(w), 0.5)
    return P.round(ops.where(small, start, end) + ops.where(small, w, w - 1) * (end - start))


def rmsprop_math(flags: tuple, slots: dict, per_param: dict, sc: dict) -> dict:
    """torch: g (+ wd p); v = v alpha + (1 - alpha) g g; centered: ga = lerp(ga, g, 1 - alpha),
    avg = sqrt(v - ga ga), else sqrt(v); avg += eps; momentum: buf = buf m + g / avg,
    p -= lr buf; else p -= lr g / avg."""
    maximize, has_wd, centered, has_momentum = flags
    lr, alpha, eps = f64(sc["lr"]), f64(sc["alpha"]), f64(sc["eps"])
    wd = f64(sc["weight_decay"]) if has_wd else None
    out: dict[str, list] = {"param": [], "square_avg": [], "grad_avg": [], "momentum_buffer": []}
    for i, (p, grad) in enumerate(zip(slots["param"], slots["grad"])):
        P = Precision(p.dtype)
        pm, g = load_grad(P, p, grad, maximize, wd)
        v = P.round(P.load(slots["square_avg"][i]) * P.scalar(alpha))
        v = P.round(v + P.scalar(1 - alpha) * g * g)
        out["square_avg"].append(P.out(v))
        if centered:
            ga = _lerp(P, P.load(slots["grad_avg"][i]), g, 1 - alpha)
            out["grad_avg"].append(P.out(ga))
            avg = P.round(ops.sqrt(P.round(v + P.scalar(-1.0) * ga * ga)))
        else:
            avg = P.round(ops.sqrt(v))
        avg = P.round(avg + P.scalar(eps))
        if has_momentum:
            buf = P.round(P.load(slots["momentum_buffer"][i]) * P.scalar(sc["momentum"]))
            buf = P.round(buf + g / avg)
            out["momentum_buffer"].append(P.out(buf))
            out["param"].append(P.out(pm + P.scalar(-lr) * buf))
        else:
            out["param"].append(P.out(pm + P.scalar(-lr) * (g / avg)))
    return out


def adagrad_math(flags: tuple, slots: dict, per_param: dict, sc: dict) -> dict:
    """torch: g (+ wd p); clr = lr / (1 + (t - 1) lr_decay); sum += g g;
    p -= clr g / (sqrt(sum) + eps)."""
    maximize, has_wd = flags
    lr, lr_decay, eps = f64(sc["lr"]), f64(sc["lr_decay"]), f64(sc["eps"])
    wd = f64(sc["weight_decay"]) if has_wd else None
    out: dict[str, list] = {"param": [], "sum": []}
    for i, (p, grad) in enumerate(zip(slots["param"], slots["grad"])):
        P = Precision(p.dtype)
        pm, g = load_grad(P, p, grad, maximize, wd)
        clr = lr / (1 + (f64(per_param["step"][i]) - 1) * lr_decay)
        s = P.round(P.load(slots["sum"][i]) + g * g)
        std = P.round(P.round(ops.sqrt(s)) + P.scalar(eps))
        out["sum"].append(P.out(s))
        out["param"].append(P.out(pm + P.scalar(-clr) * (g / std)))
    return out


def adadelta_math(flags: tuple, slots: dict, per_param: dict, sc: dict) -> dict:
    """torch: g (+ wd p); v = v rho + (1 - rho) g g; delta = sqrt(u + eps) / sqrt(v + eps) g;
    u = u rho + (1 - rho) delta delta; p -= lr delta."""
    maximize, has_wd = flags
    lr, rho, eps = f64(sc["lr"]), f64(sc["rho"]), f64(sc["eps"])
    wd = f64(sc["weight_decay"]) if has_wd else None
    out: dict[str, list] = {"param": [], "square_avg": [], "acc_delta": []}
    for i, (p, grad) in enumerate(zip(slots["param"], slots["grad"])):
        P = Precision(p.dtype)
        pm, g = load_grad(P, p, grad, maximize, wd)
        v = P.round(P.load(slots["square_avg"][i]) * P.scalar(rho))
        v = P.round(v + P.scalar(1 - rho) * g * g)
        u = P.load(slots["acc_delta"][i])
        std = P.round(ops.sqrt(P.round(v + P.scalar(eps))))
        delta = P.round(ops.sqrt(P.round(u + P.scalar(eps))))
        delta = P.round(P.round(delta / std) * g)
        u = P.round(u * P.scalar(rho))
        u = P.round(u + P.scalar(1 - rho) * delta * delta)
        out["square_avg"].append(P.out(v))
        out["acc_delta"].append(P.out(u))
        out["param"].append(P.out(pm + P.scalar(-lr) * delta))
    return out


class _Adaptive(Optimizer):
    """What the three share: argument checks, torch's defaults for loaded groups, the state
    made on a parameter's first step, the step count, and one fused update per part."""
    _name = ""
    _math: Any = None
    _slots: tuple[str, ...] = ()

    def _check(self, lr: Any, eps: float, weight_decay: Any, differentiable: bool) -> None:
        if not 0.0 <= as_float(lr):
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= as_float(weight_decay):
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if differentiable:
            raise NotImplementedError(f"{type(self).__name__}(differentiable=True): tracejit's "
                                      "optimizers do not record the step for autograd")

    def _fix_loaded_group(self, group: dict) -> None:
        for k, v in (("maximize", False), ("foreach", None), ("capturable", False),
                     ("differentiable", False)):
            group.setdefault(k, v)

    def _hyper_values(self, group: dict) -> dict[str, Any]:
        return {k: group[k] for k in self.runtime_keys}

    def _new_state(self, p: Tensor, group: dict) -> dict:
        return {name: zeros_like_param(p) for name in self._state_slots(group)}

    def _state_slots(self, group: dict) -> tuple[str, ...]:
        return self._slots

    def _step_group(self, group: dict, params: list) -> None:
        flags = self._signature(group)
        hyper = self.hyper(group)
        names = self._state_slots(group)
        for part in self.by_device_dtype(params):
            steps = []
            for p in part:
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = host_scalar(0.0, np.float32)      # as torch
                    state.update(self._new_state(p, group))
                    if STATE.traces:
                        self._restructured()
                elif not isinstance(state["step"], Tensor):    # a state dict's float step
                    state["step"] = host_scalar(float(state["step"]), np.float32)
                steps.append(count_step(state["step"]))
            slots = {"param": part, "grad": [p.grad for p in part]}
            slots.update({n: [self.state[p][n] for p in part] for n in names})
            per_param = {"step": steps} if self._name == "adagrad" else {}
            run_update(self._name, type(self)._math, flags, slots, per_param, hyper,
                       ("param",) + names, self._used)


class RMSprop(_Adaptive):
    """torch.optim.RMSprop: `RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0,
    momentum=0, centered=False, *, maximize=False)`."""
    runtime_keys = ("lr", "alpha", "eps", "weight_decay", "momentum")
    _name, _math = "rmsprop", rmsprop_math

    def __init__(self, params: Iterable, lr: Any = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0, momentum: float = 0,
                 centered: bool = False, capturable: bool = False, foreach: bool | None = None,
                 maximize: bool = False, differentiable: bool = False) -> None:
        self._check(lr, eps, weight_decay, differentiable)
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps,
                                  "centered": centered, "weight_decay": weight_decay,
                                  "capturable": capturable, "foreach": foreach,
                                  "maximize": maximize, "differentiable": differentiable})

    def _fix_loaded_group(self, group: dict) -> None:
        super()._fix_loaded_group(group)
        group.setdefault("momentum", 0)
        group.setdefault("centered", False)

    def _signature(self, group: dict) -> tuple:
        return (bool(group["maximize"]), as_float(group["weight_decay"]) != 0,
                bool(group["centered"]), as_float(group["momentum"]) > 0)

    def _state_slots(self, group: dict) -> tuple[str, ...]:
        _, _, centered, has_momentum = self._signature(group)
        return (("square_avg",) + (("momentum_buffer",) if has_momentum else ())
                + (("grad_avg",) if centered else ()))


class Adagrad(_Adaptive):
    """torch.optim.Adagrad: `Adagrad(params, lr=1e-2, lr_decay=0, weight_decay=0,
    initial_accumulator_value=0, eps=1e-10, *, maximize=False)`."""
    runtime_keys = ("lr", "lr_decay", "eps", "weight_decay")
    _name, _math, _slots = "adagrad", adagrad_math, ("sum",)

    def __init__(self, params: Iterable, lr: Any = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float = 0,
                 eps: float = 1e-10, foreach: bool | None = None, *, maximize: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        self._check(lr, eps, weight_decay, differentiable)
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(f"Invalid initial_accumulator_value value: "
                             f"{initial_accumulator_value}")
        super().__init__(params, {"lr": lr, "lr_decay": lr_decay, "eps": eps,
                                  "weight_decay": weight_decay,
                                  "initial_accumulator_value": initial_accumulator_value,
                                  "foreach": foreach, "maximize": maximize,
                                  "differentiable": differentiable, "fused": fused})
        # torch fills the state when the optimizer is made, not on the first step
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"] = host_scalar(0.0, np.float32)
                state.update(self._new_state(p, group))

    def _new_state(self, p: Tensor, group: dict) -> dict:
        s = zeros_like_param(p)
        init = as_float(group["initial_accumulator_value"])
        if init:
            s._data[...] = init
        return {"sum": s}

    def _signature(self, group: dict) -> tuple:
        return (bool(group["maximize"]), as_float(group["weight_decay"]) != 0)


class Adadelta(_Adaptive):
    """torch.optim.Adadelta: `Adadelta(params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, *,
    maximize=False)`."""
    runtime_keys = ("lr", "rho", "eps", "weight_decay")
    _name, _math, _slots = "adadelta", adadelta_math, ("square_avg", "acc_delta")

    def __init__(self, params: Iterable, lr: Any = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0, foreach: bool | None = None, *,
                 capturable: bool = False, maximize: bool = False,
                 differentiable: bool = False) -> None:
        self._check(lr, eps, weight_decay, differentiable)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps,
                                  "weight_decay": weight_decay, "maximize": maximize,
                                  "capturable": capturable, "foreach": foreach,
                                  "differentiable": differentiable})

    def _signature(self, group: dict) -> tuple:
        return (bool(group["maximize"]), as_float(group["weight_decay"]) != 0)
