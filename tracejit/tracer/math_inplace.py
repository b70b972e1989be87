"""The in-place Tensor methods of math_ops.py (round_, lerp_, addcmul_, addcdiv_, ...) and of a
few everyday ops defined elsewhere (sigmoid_, relu_, log_, reciprocal_, ...): each
is its op's value written into the tensor by inplace.py (views write through, version
counters and autograd as for add_)."""
from __future__ import annotations

from . import composites as C
from . import math_ops as M
from . import ops, stacking
from .inplace import inplace
from .operands import _err, _fmt
from .state import STATE
from ..ir import dtypes as dt

__all__ = ["round_", "floor_", "ceil_", "trunc_", "fix_", "frac_", "log1p_", "expm1_",
           "hypot_", "lerp_", "addcmul_", "addcdiv_", "nan_to_num_", "logit_", "xlogy_",
           "sinc_", "deg2rad_", "rad2deg_", "clamp_min_", "clamp_max_", "float_power_",
           "true_divide_", "heaviside_", "sigmoid_", "relu_", "log_", "sin_", "cos_", "erf_",
           "sign_", "rsqrt_", "square_", "reciprocal_"]


def _method(name: str, fn):
    def method(self, *args, **kwargs):
        def update(old):
            return fn(old, *args, **kwargs)
        # (an operand that requires grad: its node may save the old value, see inplace.py)
        update.reads_grad = STATE.grad_enabled and \
            any(getattr(a, "_requires_grad", False) for a in (*args, *kwargs.values()))
        return inplace(self, update, name)
    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"In place: `{fn.__name__}`'s value written into the tensor."
    return method


def _float_power(x, exponent):
    if x.dtype is not dt.f64:     # (torch: the result is float64, which x must be)
        raise _err("float_power_", f"the base {_fmt(x)} must be float64, the result's dtype",
                   RuntimeError)
    return M.float_power(x, exponent)


# (the ones after heaviside_ are the in-place forms of ops defined elsewhere)
_ELSEWHERE = {"sigmoid_": C.sigmoid, "relu_": C.relu, "log_": ops.log, "sin_": ops.sin,
              "cos_": ops.cos, "erf_": ops.erf, "sign_": ops.sign, "rsqrt_": stacking.rsqrt,
              "square_": stacking.square, "reciprocal_": stacking.reciprocal}
_FNS = {n: _ELSEWHERE.get(n) or getattr(M, n[:-1]) for n in __all__}
_FNS["float_power_"] = _float_power
for _n, _f in _FNS.items():
    globals()[_n] = _method(_n, _f)
