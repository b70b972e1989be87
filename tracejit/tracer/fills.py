"""In-place random fills, as torch's Tensor methods: normal_, uniform_, bernoulli_ (model code
initialises with `module.weight.data.normal_(mean=0.0, std=0.02)`). Each draws from the
tensor's device generator, or from the `generator=` given, and is an in-place update (version
bump, autograd history) like the other methods in inplace.py."""
from __future__ import annotations

from ..ir import dtypes as dt
from ..ir.primitives import P, bind
from ..devices import to_device
from . import ops
from .inplace import inplace
from . import rng
from .rng import Generator, rand, randn
from .state import STATE
from .tensor_base import TensorBase as Tensor


def draw_like(x: Tensor, normal: bool, generator: Generator | None = None,
              op: str = "normal_") -> Tensor:
    """Uniform [0, 1) or standard normal numbers of x's shape, on x's device, in float64 for
    float64 tensors and float32 otherwise (16-bit tensors round the float32 draw)."""
    d = dt.f64 if x.dtype is dt.f64 else dt.f32
    if generator is not None and STATE.traces:
        # (a device's default generator is what traced draws read; a user's own raises)
        generator = rng.own_generator(op, generator)
    if generator is None or x._traced:
        fn = randn if normal else rand
        return fn(*x.shape, dtype=d, device=None if x._traced else x.device)
    seed, offset = generator.hidden_inputs(1)
    arr = bind(P.random, seed, offset, stream=0, shape=tuple(x.shape), dtype=d, normal=normal)
    if x.device.type != "cpu":
        arr = to_device(arr, x.device)
    return Tensor(arr)


def _need_float(x: Tensor, op: str) -> None:
    if not x.dtype.is_float:
        raise ops._err(op, f"needs a floating-point tensor, got {ops._fmt(x)}", TypeError)


def normal_(self: Tensor, mean: float = 0.0, std: float = 1.0, *,
            generator: Generator | None = None) -> Tensor:
    """Fill with N(mean, std**2) in place."""
    _need_float(self, "normal_")
    if std < 0:
        raise ops._err("normal_", f"expects std >= 0.0, but found std {std}")
    return inplace(self, lambda old: ops.add(ops.mul(draw_like(old, True, generator, "normal_"),
                                                     float(std)), float(mean)), "normal_")


def uniform_(self: Tensor, a: float = 0.0, b: float = 1.0, *,
             generator: Generator | None = None, **kwargs) -> Tensor:
    """Fill with U(a, b) in place (torch spells the bounds `from` and `to`)."""
    a = kwargs.pop("from", a)
    b = kwargs.pop("to", b)
    if kwargs:
        raise TypeError(f"uniform_() got unexpected keyword arguments {sorted(kwargs)}")
    _need_float(self, "uniform_")
    if a > b:
        raise ops._err("uniform_", f"expects to return a [from, to) range, but found "
                       f"from={a} > to={b}")
    return inplace(self, lambda old: ops.add(ops.mul(draw_like(old, False, generator, "uniform_"),
                                                     float(b) - float(a)), float(a)), "uniform_")


def bernoulli_(self: Tensor, p: float = 0.5, *, generator: Generator | None = None) -> Tensor:
    """Fill with 1 with probability p, else 0, in place."""
    if not 0.0 <= p <= 1.0:
        raise ops._err("bernoulli_", f"expects p to be in [0, 1], but got p={p}")
    return inplace(self, lambda old: ops.cast(ops.lt(draw_like(old, False, generator,
                                                               "bernoulli_"), p),
                                              old.dtype), "bernoulli_")
