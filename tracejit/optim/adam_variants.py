"""NAdam, RAdam and Adamax in torch's order of operations (torch.optim's single-tensor,
non-capturable implementations), each step one fused update per (device, dtype) group as Adam's
(fused.py), with the hyperparameters as runtime scalars and the per-parameter step-dependent
factors (bias corrections, NAdam's momentum schedule, RAdam's rectification) computed as torch
computes them in Python: floats eagerly, traced float64 scalars inside a compiled step.

RAdam's `rho_t > 5` branch is a choice between two results with `where` (both computed), so a
compiled step does not depend on the step count; its rectification term is clamped at 0 where
the branch is not taken (torch never evaluates it there)."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..ir import dtypes as dt
from ..tracer import ops
from ..tracer.state import STATE
from ..tracer.tensor import Tensor
from .adaptive import _Adaptive, _lerp
from .fused import Precision, count_step, f64, load_grad, masked_copy, run_update
from .optimizer import as_float, host_scalar


def _load(P: Precision, p: Tensor, grad: Tensor, maximize: bool, has_wd: bool, decoupled: bool,
          lr: Any, wd: Any) -> tuple:
    """(param, grad) after torch's weight decay: decoupled scales the parameter by 1 - lr wd
    first, coupled adds wd p to the gradient."""
    pm, g = load_grad(P, p, grad, maximize, wd if has_wd and not decoupled else None)
    if has_wd and decoupled:
        pm = P.round(pm * P.scalar(1 - lr * wd))
    return pm, g


def _second_moment(P: Precision, v: Tensor, g: Tensor, beta2: Any) -> Tensor:
    """exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)."""
    v = P.round(v * P.scalar(beta2))
    return P.round(v + P.scalar(1 - beta2) * g * g)


def nadam_math(flags: tuple, slots: dict, per_param: dict, sc: dict) -> dict:
    """torch: g (+ wd p, or p *= 1 - lr wd); m = lerp(m, g, 1 - beta1); v = v beta2 +
    (1 - beta2) g g; denom = sqrt(v / bc2) + eps; p += -lr (1 - mu) / (1 - mu_prod) g / denom;
    p += -lr mu_next / (1 - mu_prod mu_next) m / denom."""
    maximize, decoupled, has_wd = flags
    lr, beta1, beta2 = f64(sc["lr"]), f64(sc["beta1"]), f64(sc["beta2"])
    eps, wd = f64(sc["eps"]), f64(sc["weight_decay"])
    out: dict[str, list] = {"param": [], "exp_avg": [], "exp_avg_sq": []}
    for i, (p, grad) in enumerate(zip(slots["param"], slots["grad"])):
        P = Precision(p.dtype)
        pm, g = _load(P, p, grad, maximize, has_wd, decoupled, lr, wd)
        m = _lerp(P, P.load(slots["exp_avg"][i]), g, 1 - beta1)
        v = _second_moment(P, P.load(slots["exp_avg_sq"][i]), g, beta2)
        denom = P.round(ops.sqrt(P.round(v / P.scalar(per_param["bc2"][i]))))
        denom = P.round(denom + P.scalar(eps))
        mu, mu_next = f64(per_param["mu"][i]), f64(per_param["mu_next"][i])
        mu_prod = f64(per_param["mu_prod"][i])
        c1 = -lr * (1.0 - mu) / (1.0 - mu_prod)
        c2 = (-lr * mu_next) / (1.0 - mu_prod * mu_next)
        pm = P.round(pm + P.scalar(c1) * g / denom)
        out["param"].append(P.out(pm + P.scalar(c2) * m / denom))
        out["exp_avg"].append(P.out(m))
        out["exp_avg_sq"].append(P.out(v))
    return out


def radam_math(flags: tuple, slots: dict, per_param: dict, sc: dict) -> dict:
    """torch: g (+ wd p, or p *= 1 - lr wd); m = lerp(m, g, 1 - beta1); v as Adam's;
    m_hat = m / bc1; if rho_t > 5: p -= m_hat lr (sqrt(bc2) / (sqrt(v) + eps)) rect,
    else p -= m_hat lr."""
    maximize, decoupled, has_wd = flags
    lr, beta1, beta2 = f64(sc["lr"]), f64(sc["beta1"]), f64(sc["beta2"])
    eps, wd = f64(sc["eps"]), f64(sc["weight_decay"])
    out: dict[str, list] = {"param": [], "exp_avg": [], "exp_avg_sq": []}
    for i, (p, grad) in enumerate(zip(slots["param"], slots["grad"])):
        P = Precision(p.dtype)
        pm, g = _load(P, p, grad, maximize, has_wd, decoupled, lr, wd)
        m = _lerp(P, P.load(slots["exp_avg"][i]), g, 1 - beta1)
        v = _second_moment(P, P.load(slots["exp_avg_sq"][i]), g, beta2)
        m_hat = P.round(m / P.scalar(per_param["bc1"][i]))
        plain = P.round(m_hat * P.scalar(lr))
        s = P.round(P.round(ops.sqrt(v)) + P.scalar(eps))
        # torch: (bc2 ** 0.5) / s, which a tensor computes as s.reciprocal() * (bc2 ** 0.5)
        adaptive = P.round(P.round(1.0 / s) * P.scalar(f64(per_param["bc2"][i]) ** 0.5))
        rectified = P.round(P.round(plain * adaptive) * P.scalar(per_param["rect"][i]))
        upd = ops.where(ops.gt(f64(per_param["use_rect"][i]), 0.5), rectified, plain)
        out["param"].append(P.out(pm - upd))
        out["exp_avg"].append(P.out(m))
        out["exp_avg_sq"].append(P.out(v))
    return out


def adamax_math(flags: tuple, slots: dict, per_param: dict, sc: dict) -> dict:
    """torch: g (+ wd p); m = lerp(m, g, 1 - beta1); u = max(u beta2, |g| + eps);
    p += -(lr / (1 - beta1^t)) m / u."""
    maximize, has_wd = flags
    lr, beta1, beta2 = f64(sc["lr"]), f64(sc["beta1"]), f64(sc["beta2"])
    eps = f64(sc["eps"])
    wd = f64(sc["weight_decay"]) if has_wd else None
    out: dict[str, list] = {"param": [], "exp_avg": [], "exp_inf": []}
    for i, (p, grad) in enumerate(zip(slots["param"], slots["grad"])):
        P = Precision(p.dtype)
        pm, g = load_grad(P, p, grad, maximize, wd)
        m = _lerp(P, P.load(slots["exp_avg"][i]), g, 1 - beta1)
        u = P.round(P.load(slots["exp_inf"][i]) * P.scalar(beta2))
        u = ops.maximum(u, P.round(P.round(ops.abs(g)) + P.scalar(eps)))
        clr = lr / f64(per_param["bc1"][i])
        out["param"].append(P.out(pm + P.scalar(-clr) * m / u))
        out["exp_avg"].append(P.out(m))
        out["exp_inf"].append(P.out(u))
    return out


def _scale_state(t: Tensor, factor: Any) -> Any:
    """t *= factor for a 0-d state tensor (torch's `mu_product *= mu`: the factor rounded to
    t's dtype, float32 as made, the parameter's dtype after load_state_dict, as torch's);
    returns the new value as a float64 scalar."""
    if STATE.traces:
        new = t * ops.cast(factor, t.dtype)
        masked_copy(t, new)
        return f64(new)
    d = t._data
    d[...] = d * d.dtype.type(factor)
    t._version[0] += 1
    return float(d)


class _AdamFamily(_Adaptive):
    """What NAdam, RAdam and Adamax share with Adam: betas, torch's checks, the state
    (a float32 step, zeroed moments) made on a parameter's first step."""
    runtime_keys = ("lr", "betas", "eps", "weight_decay")
    _extra_state: dict[str, float] = {}

    def _check_betas(self, lr: Any, betas: tuple, eps: float, weight_decay: Any,
                     differentiable: bool) -> tuple:
        # (torch's order: lr, eps, betas, weight_decay)
        self._check(lr, eps, 0.0, False)
        for i in (0, 1):
            if not 0.0 <= as_float(betas[i]) < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {betas[i]}")
        self._check(lr, eps, weight_decay, differentiable)
        return tuple(as_float(b) if isinstance(b, Tensor) else b for b in betas)

    def _hyper_values(self, group: dict) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        return {"lr": group["lr"], "beta1": beta1, "beta2": beta2, "eps": group["eps"],
                "weight_decay": group["weight_decay"]}

    def _prepare(self, part: list) -> list[dict]:
        states = []
        for p in part:
            state = self.state[p]
            if len(state) == 0:
                state["step"] = host_scalar(0.0, np.float32)      # as torch
                for k, v in self._extra_state.items():
                    state[k] = host_scalar(v, np.float32)
                # (made inside a trace, as Adam's: captures from then on, and the update's
                # form does not change, so the trace stays valid)
                state.update(self._new_state(p, {}))
            else:
                for k in ("step",) + tuple(self._extra_state):
                    if not isinstance(state[k], Tensor):   # a state dict's float
                        state[k] = host_scalar(float(state[k]), np.float32)
            states.append(state)
        return states

    def _per_param(self, states: list[dict], hyper: dict, group: dict) -> dict[str, list]:
        raise NotImplementedError

    def _step_group(self, group: dict, params: list) -> None:
        flags = self._signature(group)
        hyper = self.hyper(group)
        for part in self.by_device_dtype(params):
            states = self._prepare(part)
            per_param = self._per_param(states, hyper, group)
            slots = {"param": part, "grad": [p.grad for p in part]}
            slots.update({n: [s[n] for s in states] for n in self._slots})
            run_update(self._name, type(self)._math, flags, slots, per_param, hyper,
                       ("param",) + self._slots, self._used)


def _pow(base: Any, t: Any) -> Any:
    """base ** t for a float base and a step count (float, or traced float64)."""
    return f64(base) ** t


class _DecoupledDecay(_AdamFamily):
    """NAdam's and RAdam's `decoupled_weight_decay` (AdamW's decay when set): part of the
    update's form, and absent from state dicts saved before torch had it."""

    def _fix_loaded_group(self, group: dict) -> None:
        super()._fix_loaded_group(group)
        group.setdefault("decoupled_weight_decay", False)

    def _signature(self, group: dict) -> tuple:
        return (bool(group["maximize"]), bool(group["decoupled_weight_decay"]),
                as_float(group["weight_decay"]) != 0)


class NAdam(_DecoupledDecay):
    """torch.optim.NAdam: `NAdam(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0, momentum_decay=4e-3, decoupled_weight_decay=False, *, maximize=False)`."""
    _name, _math = "nadam", nadam_math
    _slots = ("exp_avg", "exp_avg_sq")
    _extra_state = {"mu_product": 1.0}

    def __init__(self, params: Iterable, lr: Any = 2e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False) -> None:
        betas = self._check_betas(lr, betas, eps, weight_decay, differentiable)
        if not 0.0 <= momentum_decay:
            raise ValueError(f"Invalid momentum_decay value: {momentum_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay,
                                  "momentum_decay": momentum_decay,
                                  "decoupled_weight_decay": decoupled_weight_decay,
                                  "maximize": maximize, "foreach": foreach,
                                  "capturable": capturable, "differentiable": differentiable})

    def _per_param(self, states: list[dict], hyper: dict, group: dict) -> dict[str, list]:
        # momentum_decay is a Python constant of the group (torch reads it as one)
        md = float(group["momentum_decay"])
        pp: dict[str, list] = {"bc2": [], "mu": [], "mu_next": [], "mu_prod": []}
        beta1, beta2 = hyper["beta1"], hyper["beta2"]
        for s in states:
            t = count_step(s["step"])
            pp["bc2"].append(1 - _pow(beta2, t))
            mu = f64(beta1) * (1.0 - 0.5 * (0.96 ** (t * md)))
            mu_next = f64(beta1) * (1.0 - 0.5 * (0.96 ** ((t + 1) * md)))
            pp["mu"].append(mu)
            pp["mu_next"].append(mu_next)
            pp["mu_prod"].append(_scale_state(s["mu_product"], mu))
        return pp


class RAdam(_DecoupledDecay):
    """torch.optim.RAdam: `RAdam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0, decoupled_weight_decay=False, *, maximize=False)`."""
    _name, _math = "radam", radam_math
    _slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, params: Iterable, lr: Any = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0,
                 decoupled_weight_decay: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False) -> None:
        betas = self._check_betas(lr, betas, eps, weight_decay, differentiable)
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay,
                                  "decoupled_weight_decay": decoupled_weight_decay,
                                  "maximize": maximize, "foreach": foreach,
                                  "capturable": capturable, "differentiable": differentiable})

    def _per_param(self, states: list[dict], hyper: dict, group: dict) -> dict[str, list]:
        pp: dict[str, list] = {"bc1": [], "bc2": [], "rect": [], "use_rect": []}
        beta1, beta2 = f64(hyper["beta1"]), f64(hyper["beta2"])
        for s in states:
            t = count_step(s["step"])
            bc1, bc2 = 1 - beta1 ** t, 1 - beta2 ** t
            rho_inf = 2 / (1 - beta2) - 1
            rho_t = rho_inf - 2 * t * (beta2 ** t) / bc2
            ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            if isinstance(rho_t, Tensor):
                use = ops.cast(ops.gt(rho_t, 5.0), dt.f64)
                rect = ops.sqrt(ops.where(ops.gt(rho_t, 5.0), ratio, 0.0))
            else:
                use = 1.0 if rho_t > 5.0 else 0.0
                rect = ratio ** 0.5 if rho_t > 5.0 else 0.0
            pp["bc1"].append(bc1)
            pp["bc2"].append(bc2)
            pp["rect"].append(rect)
            pp["use_rect"].append(use)
        return pp


class Adamax(_AdamFamily):
    """torch.optim.Adamax: `Adamax(params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8,
    weight_decay=0, *, maximize=False)` (the infinity norm of the gradients)."""
    _name, _math = "adamax", adamax_math
    _slots = ("exp_avg", "exp_inf")

    def __init__(self, params: Iterable, lr: Any = 2e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False,
                 capturable: bool = False) -> None:
        betas = self._check_betas(lr, betas, eps, weight_decay, differentiable)
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay, "foreach": foreach,
                                  "maximize": maximize, "differentiable": differentiable,
                                  "capturable": capturable})

    def _signature(self, group: dict) -> tuple:
        return (bool(group["maximize"]), as_float(group["weight_decay"]) != 0)

    def _per_param(self, states: list[dict], hyper: dict, group: dict) -> dict[str, list]:
        beta1 = hyper["beta1"]
        return {"bc1": [1 - _pow(beta1, count_step(s["step"])) for s in states]}
