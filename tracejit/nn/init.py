"""`tracejit.nn.init`: torch.nn.init's in-place initialisers. Each runs under no_grad, writes
into the tensor's own storage, and draws from tracejit's generator (tj.manual_seed), or from
the `generator=` given."""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from ..tracer.fills import draw_like
from ..tracer.rng import Generator
from ..tracer.state import no_grad
from ..tracer.tensor import Tensor


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity (torch's table)."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d")
    if nonlinearity in linear or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif not isinstance(param, bool) and isinstance(param, (int, float)):
            slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    if tensor.ndim < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 "
                         "dimensions")
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _calculate_correct_fan(tensor: Tensor, mode: str) -> int:
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _check(tensor: Tensor, op: str) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"nn.init.{op}: expected a Tensor, got {type(tensor).__name__}")
    if tensor._traced:
        raise RuntimeError(f"nn.init.{op}: cannot initialise a tensor traced inside "
                           f"@tj.compile; initialise parameters outside compiled functions")


def _write(tensor: Tensor, value: Tensor) -> Tensor:
    with no_grad():
        if value.device != tensor.device:
            value = value.to(tensor.device)
        tensor.copy_(value)
    return tensor


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0,
             generator: Generator | None = None) -> Tensor:
    """Fill with U(a, b)."""
    _check(tensor, "uniform_")
    with no_grad():
        return tensor.uniform_(a, b, generator=generator)


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0,
            generator: Generator | None = None) -> Tensor:
    """Fill with N(mean, std**2)."""
    _check(tensor, "normal_")
    with no_grad():
        return tensor.normal_(mean, std, generator=generator)


def _ndtri(p: np.ndarray) -> np.ndarray:
    """The inverse standard normal CDF of p in (0, 1), vectorised: Acklam's rational
    approximation, relative error below 1.2e-9 (far below float32 resolution; a random
    initialisation needs no more)."""
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
         1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
         6.680131188771972e+01, -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
         -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
         3.754408661907416e+00)

    def poly(coef, x):
        out = np.zeros_like(x)
        for k in coef:
            out = out * x + k
        return out
    r = (p - 0.5) ** 2
    x = poly(a, r) * (p - 0.5) / (poly(b, r) * r + 1.0)
    in_tail = np.minimum(p, 1.0 - p) < 0.02425          # about 5% of a uniform draw
    pt = p[in_tail]
    q = np.sqrt(-2.0 * np.log(np.minimum(pt, 1.0 - pt)))
    xt = poly(c, q) / (poly(d, q) * q + 1.0)
    x[in_tail] = np.where(pt < 0.5, xt, -xt)
    return x


def trunc_normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                  b: float = 2.0, generator: Generator | None = None) -> Tensor:
    """Fill with N(mean, std**2) truncated to [a, b] (a and b are absolute bounds, as torch):
    a uniform draw between the bounds' CDF values mapped through the inverse normal CDF."""
    _check(tensor, "trunc_normal_")
    nd = NormalDist()
    lo, hi = nd.cdf((a - mean) / std), nd.cdf((b - mean) / std)
    with no_grad():
        u = draw_like(tensor, False, generator)
        p = lo + (hi - lo) * np.asarray(u._host("trunc_normal_"), np.float64)
        # the inverse CDF is infinite at exactly 0 and 1: keep p strictly inside (0, 1)
        p = np.clip(p, np.nextafter(0.0, 1.0), np.nextafter(1.0, 0.0))
        x = np.clip(_ndtri(p) * std + mean, a, b)
        return _write(tensor, Tensor(x))


def constant_(tensor: Tensor, val: float) -> Tensor:
    _check(tensor, "constant_")
    with no_grad():
        tensor.fill_(val)
    return tensor


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0)


def zeros_(tensor: Tensor) -> Tensor:
    _check(tensor, "zeros_")
    with no_grad():
        tensor.zero_()
    return tensor


def eye_(tensor: Tensor) -> Tensor:
    """The identity matrix (2-D tensors only)."""
    _check(tensor, "eye_")
    if tensor.ndim != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    return _write(tensor, Tensor(np.eye(*tensor.shape, dtype=tensor.dtype.np)))


def dirac_(tensor: Tensor, groups: int = 1) -> Tensor:
    """The identity convolution (3-5 D weights): 1 at the kernel centre where, within each of
    `groups` groups, output channel d meets input channel d."""
    _check(tensor, "dirac_")
    if tensor.ndim not in (3, 4, 5):
        raise ValueError("Only tensors with 3, 4, or 5 dimensions are supported")
    out_per_group = tensor.shape[0] // groups
    if tensor.shape[0] % groups:
        raise ValueError("dim 0 must be divisible by groups")
    value = np.zeros(tensor.shape, dtype=tensor.dtype.np)
    centre = tuple(k // 2 for k in tensor.shape[2:])
    for g in range(groups):
        for d in range(min(out_per_group, tensor.shape[1])):
            value[(g * out_per_group + d, d) + centre] = 1
    return _write(tensor, Tensor(value))


def xavier_uniform_(tensor: Tensor, gain: float = 1.0,
                    generator: Generator | None = None) -> Tensor:
    """U(±gain * sqrt(6 / (fan_in + fan_out)))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0,
                   generator: Generator | None = None) -> Tensor:
    """N(0, gain**2 * 2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return normal_(tensor, 0.0, std, generator)


def kaiming_uniform_(tensor: Tensor, a: float = 0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu",
                     generator: Generator | None = None) -> Tensor:
    """U(±gain * sqrt(3 / fan)), gain = calculate_gain(nonlinearity, a)."""
    _check(tensor, "kaiming_uniform_")
    if 0 in tensor.shape:
        return tensor            # torch warns and leaves an empty tensor alone
    fan = _calculate_correct_fan(tensor, mode)
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor: Tensor, a: float = 0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu",
                    generator: Generator | None = None) -> Tensor:
    """N(0, (gain / sqrt(fan))**2)."""
    _check(tensor, "kaiming_normal_")
    if 0 in tensor.shape:
        return tensor
    fan = _calculate_correct_fan(tensor, mode)
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan), generator)


def orthogonal_(tensor: Tensor, gain: float = 1.0,
                generator: Generator | None = None) -> Tensor:
    """A (semi-)orthogonal matrix from the QR decomposition of a normal draw (torch's method)."""
    _check(tensor, "orthogonal_")
    if tensor.ndim < 2:
        raise ValueError("Only tensors with 2 or more dimensions are supported")
    if tensor.numel() == 0:
        return tensor
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    with no_grad():
        z = np.asarray(draw_like(tensor, True, generator)._host("orthogonal_"), np.float64)
    flat = z.reshape(rows, cols)
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    d = np.sign(np.diag(r))
    q = q * np.where(d == 0, 1.0, d)       # makes the decomposition unique, as torch
    if rows < cols:
        q = q.T
    return _write(tensor, Tensor(gain * q.reshape(tensor.shape)))


# torch's deprecated spellings without the trailing underscore are not provided: they warn in
# torch and would only hide which function ran.
