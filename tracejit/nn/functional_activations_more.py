"""torch.nn.functional's softshrink / hardshrink, the in-place activations relu_, elu_,
leaky_relu_, hardtanh_, threshold_, selu_, celu_ (a real in-place update of the tensor: version
bump, new autograd history, torch's errors on a leaf that requires grad), and gumbel_softmax
(soft, or hard with the straight-through gradient), over tracejit's own random numbers."""
from __future__ import annotations

from ..tracer import composites as C
from ..tracer import ops
from ..tracer.float_only import float_only, no_bool
from ..tracer.inplace import inplace as _inplace
from ..tracer.masking import one_hot
from ..tracer.rng import rand_like
from ..tracer.selection import argmax
from ..tracer.stacking import movedim
from .functional_activations import _elu_part, celu, selu, threshold

__all__ = ["softshrink", "hardshrink", "relu_", "elu_", "leaky_relu_", "hardtanh_",
           "threshold_", "selu_", "celu_", "gumbel_softmax"]


def _zero(x):
    return ops.as_tensor(0.0, x.dtype, like=x)


def hardshrink(input, lambd: float = 0.5):  # noqa: A002
    """x where |x| > lambd, else 0 (gradient 0 on [-lambd, lambd], as torch's)."""
    x = ops.as_tensor(input)
    float_only("hardshrink", x)
    return ops.where(ops.gt(ops.abs(x), lambd), x, _zero(x))


def softshrink(input, lambd: float = 0.5):  # noqa: A002
    """x - lambd above lambd, x + lambd below -lambd, else 0."""
    if lambd < 0:
        raise ops._err("softshrink", f"lambda must be greater or equal to 0, but found to be "
                       f"{lambd}.", RuntimeError)
    x = ops.as_tensor(input)
    float_only("softshrink", x)
    return ops.where(ops.gt(x, lambd), ops.sub(x, lambd),
                     ops.where(ops.lt(x, -lambd), ops.add(x, lambd), _zero(x)))


def relu_(input):  # noqa: A002
    return _inplace(ops.as_tensor(input), C.relu, "relu_")


def elu_(input, alpha: float = 1.0):  # noqa: A002
    return _inplace(ops.as_tensor(input), lambda x: _elu_part(x, alpha, 1.0, "elu_"), "elu_")


def leaky_relu_(input, negative_slope: float = 0.01):  # noqa: A002
    # slope at 0 too, as torch's backward (x > 0 ? 1 : slope)
    x = ops.as_tensor(input)
    float_only("leaky_relu_", x)
    return _inplace(x, lambda x: ops.where(ops.gt(x, 0), x, ops.mul(x, negative_slope)),
                    "leaky_relu_")


def hardtanh_(input, min_val: float = -1.0, max_val: float = 1.0):  # noqa: A002
    """clip(x, min_val, max_val); gradient 1 strictly inside, 0 at and beyond the bounds."""
    if min_val > max_val:
        raise ops._err("hardtanh_", f"min_val {min_val} cannot be greater than max_val "
                       f"{max_val}", ValueError)

    x = ops.as_tensor(input)
    no_bool("hardtanh_", x)
    if x.dtype.is_int:          # torch: integer bounds (truncated), an integer result
        min_val, max_val = int(min_val), int(max_val)

    def fn(x):
        inside = ops.logical_and(ops.gt(x, min_val), ops.lt(x, max_val))
        return ops.where(inside, x, ops.stop_gradient(ops.clip(x, min_val, max_val)))
    return _inplace(x, fn, "hardtanh_")


def threshold_(input, threshold_: float, value: float):  # noqa: A002
    return threshold(input, threshold_, value, inplace=True)


def selu_(input):  # noqa: A002
    return selu(input, inplace=True)


def celu_(input, alpha: float = 1.0):  # noqa: A002
    return celu(input, alpha, inplace=True)


def gumbel_softmax(logits, tau: float = 1.0, hard: bool = False, eps: float = 1e-10,
                   dim: int = -1):
    """softmax((logits + g) / tau) with g ~ Gumbel(0, 1) drawn from tracejit's generator;
    hard=True returns the one-hot of its argmax in the forward pass and the soft sample's
    gradient (y_hard - y_soft.detach() + y_soft, as torch's). eps is unused (as torch's)."""
    x = ops.as_tensor(logits)
    if not x.dtype.is_float:
        raise ops._err("gumbel_softmax", f"logits must be floating point, got {ops._fmt(x)}",
                       TypeError)
    # -log(E) with E ~ Exp(1) = -log(-log(U)); U's 0 would be an infinite E: kept off it
    u = ops.clip(rand_like(x), 1e-300 if x.dtype.np.itemsize == 8 else 1e-38)
    g = ops.neg(ops.log(ops.neg(ops.log(u))))
    y_soft = C.softmax(ops.div(ops.add(x, g), tau), dim)
    if not hard:
        return y_soft
    d = dim % x.ndim if x.ndim else 0
    idx = argmax(y_soft, d)
    y_hard = ops.cast(one_hot(idx, x.shape[d]), x.dtype)
    if d != x.ndim - 1:                       # one_hot puts the classes last
        y_hard = movedim(y_hard, -1, d)
    return ops.add(ops.sub(y_hard, ops.stop_gradient(y_soft)), y_soft)
