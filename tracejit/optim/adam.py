"""Adam and AdamW in torch's order of operations (torch.optim.Adam's single-tensor,
non-capturable implementation): AdamW decays the weights before the moments; eps is added
outside the square root, after the bias correction; amsgrad keeps the max of the uncorrected
second moment."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..tracer import ops
from ..tracer.state import STATE
from ..tracer.tensor import Tensor
from .fused import Precision, count_step, f64, run_update
from .optimizer import Optimizer, as_float, host_scalar, zeros_like_param


def adam_math(flags: tuple, slots: dict, per_param: dict, sc: dict) -> dict:
    """One Adam(W) update of every parameter in `slots` (see fused.py for the convention).

    torch: g = -grad if maximize; p = p * (1 - lr * wd) (AdamW) or g = g + wd * p (Adam);
    m = lerp(m, g, 1 - beta1); v = v * beta2 + (1 - beta2) * g * g; vmax = max(vmax, v);
    denom = sqrt(v or vmax) / sqrt(1 - beta2^t) + eps; p = p + (-lr / (1 - beta1^t)) * m / denom.
    The bias corrections 1 - beta1^t and sqrt(1 - beta2^t) come per parameter (`bc1`,
    `bc2_sqrt`), since each parameter counts its own steps."""
    amsgrad, maximize, decoupled, has_wd = flags
    lr, beta1, beta2 = f64(sc["lr"]), f64(sc["beta1"]), f64(sc["beta2"])
    eps, wd = f64(sc["eps"]), f64(sc["weight_decay"])
    out: dict[str, list] = {"param": [], "exp_avg": [], "exp_avg_sq": [], "max_exp_avg_sq": []}
    # the hyperparameters' operands, made once per parameter dtype (traced, each is an op or
    # a few, and a model has hundreds of parameters: tracing cost of a compiled step)
    hyper: dict = {}
    for i, (p, grad) in enumerate(zip(slots["param"], slots["grad"])):
        h = hyper.get(p.dtype)
        if h is None:
            P = Precision(p.dtype)
            # torch's lerp: start + w * (end - start) for |w| < 0.5, else
            # end - (1 - w)(end - start)
            w = P.scalar(1 - beta1)
            small = ops.lt(ops.abs(w), 0.5)
            decay = (P.scalar(1 - lr * wd) if decoupled else P.scalar(wd)) if has_wd else None
            h = hyper[p.dtype] = (P, decay, small, ops.where(small, w, w - 1),
                                  P.scalar(beta2), P.scalar(1 - beta2), P.scalar(eps))
        P, decay, small, lerp_w, b2, one_minus_b2, eps_op = h
        pm, g = P.load(p), P.load(grad)
        m, v = P.load(slots["exp_avg"][i]), P.load(slots["exp_avg_sq"][i])
        if maximize:
            g = -g
        if has_wd:
            if decoupled:
                pm = P.round(pm * decay)
            else:
                g = P.round(g + decay * pm)
        m = P.round(ops.where(small, m, g) + lerp_w * (g - m))
        v = P.round(v * b2)
        v = P.round(v + one_minus_b2 * g * g)
        step_size = lr / f64(per_param["bc1"][i])
        vv = v
        if amsgrad:
            vv = P.round(ops.maximum(P.load(slots["max_exp_avg_sq"][i]), v))
            out["max_exp_avg_sq"].append(P.out(vv))
        denom = P.round(P.round(ops.sqrt(vv)) / P.scalar(per_param["bc2_sqrt"][i]))
        denom = P.round(denom + eps_op)
        out["param"].append(P.out(pm + P.scalar(-step_size) * m / denom))
        out["exp_avg"].append(P.out(m))
        out["exp_avg_sq"].append(P.out(v))
    return out


class Adam(Optimizer):
    """torch.optim.Adam: `Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
    amsgrad=False, *, maximize=False, decoupled_weight_decay=False)`. Each step runs fused (one
    compiled update per (device, dtype) group); `foreach`/`fused`/`capturable` are accepted for
    compatibility."""

    runtime_keys = ("lr", "betas", "eps", "weight_decay")

    def __init__(self, params: Iterable, lr: Any = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False) -> None:
        if not 0.0 <= as_float(lr):
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= as_float(betas[0]) < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= as_float(betas[1]) < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if differentiable:
            raise NotImplementedError(f"{type(self).__name__}(differentiable=True): tracejit's "
                                      f"optimizers do not record the step for autograd")
        betas = tuple(as_float(b) if isinstance(b, Tensor) else b for b in betas)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
                    "capturable": capturable, "differentiable": differentiable, "fused": fused,
                    "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)

    def _fix_loaded_group(self, group: dict) -> None:
        for k, v in (("amsgrad", False), ("maximize", False), ("foreach", None),
                     ("capturable", False), ("differentiable", False),
                     ("decoupled_weight_decay", False), ("fused", None)):
            group.setdefault(k, v)

    def _signature(self, group: dict) -> tuple:
        return (bool(group["amsgrad"]), bool(group["maximize"]),
                bool(group["decoupled_weight_decay"]), as_float(group["weight_decay"]) != 0)

    def _hyper_values(self, group: dict) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        return {"lr": group["lr"], "beta1": beta1, "beta2": beta2, "eps": group["eps"],
                "weight_decay": group["weight_decay"]}

    def _state(self, p: Tensor, amsgrad: bool) -> dict:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = host_scalar(0.0, np.float32)      # as torch: float32, on the host
            state["exp_avg"] = zeros_like_param(p)
            state["exp_avg_sq"] = zeros_like_param(p)
            if amsgrad:
                state["max_exp_avg_sq"] = zeros_like_param(p)
        else:
            if not isinstance(state["step"], Tensor):      # (an old state dict's float step)
                state["step"] = host_scalar(float(state["step"]), np.float32)
            if amsgrad and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = zeros_like_param(p)
        return state

    def _bias_corrections(self, step: Tensor, beta1: Any, beta2: Any) -> tuple[Any, Any]:
        """Count one more step and return (1 - beta1^t, sqrt(1 - beta2^t)): Python floats
        eagerly, as torch computes them; traced values inside a trace (the count is state)."""
        t = count_step(step)
        if STATE.traces:
            return 1 - f64(beta1) ** t, (1 - f64(beta2) ** t) ** 0.5
        return 1 - beta1 ** t, (1 - beta2 ** t) ** 0.5

    def _step_group(self, group: dict, params: list) -> None:
        amsgrad, maximize, decoupled, has_wd = flags = self._signature(group)
        hyper = self.hyper(group)
        for part in self.by_device_dtype(params):
            states = [self._state(p, amsgrad) for p in part]
            slots = {"param": part, "grad": [p.grad for p in part],
                     "exp_avg": [s["exp_avg"] for s in states],
                     "exp_avg_sq": [s["exp_avg_sq"] for s in states]}
            if amsgrad:
                slots["max_exp_avg_sq"] = [s["max_exp_avg_sq"] for s in states]
            bc1, bc2 = [], []
            for s in states:
                a, b = self._bias_corrections(s["step"], hyper["beta1"], hyper["beta2"])
                bc1.append(a)
                bc2.append(b)
            written = ("param", "exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad
                                                             else ())
            run_update("adam", adam_math, flags, slots, {"bc1": bc1, "bc2_sqrt": bc2}, hyper,
                       written, self._used)


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (default 1e-2), applied to the
    weights before the moments."""

    def __init__(self, params: Iterable, lr: Any = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def _fix_loaded_group(self, group: dict) -> None:
        super()._fix_loaded_group(group)
        group["decoupled_weight_decay"] = True
