"""Random numbers: one Philox4x32-10 generator per device, the random tensor constructors and
dropout.

A generator's state is (seed, offset). Every random op draws from one stream of the
generator: eager ops use the stream `offset` and advance the offset by one; inside
`@tj.compile` each random op gets a fixed stream number in trace order, the graph takes the
seed and offset as hidden inputs (`%rng_seed`, `%rng_offset` in the IR), and each call
advances the offset by the number of random ops. Element i of a random op is a function of
(seed, offset + stream, i) only (see ir/prims_random.py), so eager mode, the interpreter, the
LLVM and the CUDA code give the same numbers for the same state. Eager random tensors for a
GPU are generated on the host and copied over.
"""
from __future__ import annotations

import contextlib
import math
import threading

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import user_location
from ..ir.primitives import P, bind
from ..devices import Device, device as as_device, to_device
from . import ops
from .state import current_trace
from .tensor_base import TensorBase as Tensor

DEFAULT_SEED = 67280421310721      # PyTorch's default seed
_MASK64 = (1 << 64) - 1


def _as_i64(u: int) -> np.ndarray:
    """A 64-bit word as the 0-d int64 array a graph input takes (same bits)."""
    return np.array(u - (1 << 64) if u >= 1 << 63 else u, dtype=np.int64)


class Generator:
    """The Philox state of one device: a 64-bit seed and a 64-bit offset. `tj.Generator()`
    (torch's spelling, for `generator=` arguments) is a CPU generator of its own."""

    def __init__(self, device: Device | str = "cpu", seed: int = DEFAULT_SEED) -> None:
        self.device = as_device(device)
        self._lock = threading.Lock()
        self._seed, self._offset = seed & _MASK64, 0

    def manual_seed(self, seed: int) -> "Generator":
        with self._lock:
            self._seed, self._offset = _check_seed(seed), 0
        return self

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self) -> tuple[int, int]:
        return self._seed, self._offset

    def set_state(self, state: tuple[int, int]) -> None:
        seed, offset = state
        with self._lock:
            self._seed, self._offset = _check_seed(seed), int(offset) & _MASK64

    def reserve(self, n: int) -> tuple[int, int]:
        """(seed, offset) for `n` streams, and advance past them."""
        with self._lock:
            seed, off = self._seed, self._offset
            self._offset = (off + n) & _MASK64
        return seed, off

    def hidden_inputs(self, n: int) -> list[np.ndarray]:
        """The (seed, offset) inputs of a compiled graph with `n` random ops, for one call."""
        seed, off = self.reserve(n)
        return [_as_i64(seed), _as_i64(off)]

    def __repr__(self) -> str:
        return f"<tracejit Generator {self.device} seed={self._seed} offset={self._offset}>"


def _check_seed(seed) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"manual_seed: the seed must be an int, got {type(seed).__name__} "
                        f"(at {user_location()})")
    return int(seed) & _MASK64


_GENERATORS: dict[str, Generator] = {}
_DEFAULT = [DEFAULT_SEED]          # the seed new generators start from
_GLOBAL_LOCK = threading.Lock()


def default_generator(device=None) -> Generator:
    """The generator of `device` (default: TRACEJIT_DEVICE, else the CPU)."""
    dev = as_device(device)
    key = str(dev)
    with _GLOBAL_LOCK:
        g = _GENERATORS.get(key)
        if g is None:
            g = _GENERATORS[key] = Generator(dev, _DEFAULT[0])
        return g


def manual_seed(seed: int) -> Generator:
    """Seed every device's generator (offsets back to 0), as torch.manual_seed does."""
    s = _check_seed(seed)
    with _GLOBAL_LOCK:
        _DEFAULT[0] = s
        gens = list(_GENERATORS.values())
    for g in gens:
        g.manual_seed(s)
    return default_generator("cpu")


def initial_seed() -> int:
    return default_generator("cpu").initial_seed()


def get_rng_state(device=None) -> tuple[int, int]:
    """The (seed, offset) of a device's generator."""
    return default_generator(device).get_state()


def set_rng_state(state: tuple[int, int], device=None) -> None:
    default_generator(device).set_state(state)


def all_states() -> dict[str, tuple[int, int]]:
    """Every device generator's (seed, offset), for `replaying`."""
    default_generator("cpu")
    with _GLOBAL_LOCK:
        return {k: g.get_state() for k, g in _GENERATORS.items()}


def trace_rng_position():
    """(the innermost trace, its next random stream number), or None outside a trace: where a
    checkpoint's forward starts drawing, for `replaying` to draw the same traced numbers."""
    ctx = current_trace()
    return None if ctx is None else (ctx, ctx.n_random)


@contextlib.contextmanager
def replaying(states: dict[str, tuple[int, int]] | None, trace_pos=None):
    """Run a block with the generators back at `states` (from `all_states`), then put them
    where they were: a recomputation (checkpoint's backward) draws the numbers the first run
    drew, and the sequence the rest of the program sees does not change. None: as they are.
    Inside a trace, random ops take stream numbers instead: with `trace_pos` (from
    `trace_rng_position` at the first run) and that trace still innermost, the block reuses
    the first run's stream numbers, and the streams after it stay the trace's own."""
    ctx = current_trace()
    if trace_pos is not None and trace_pos[0] is ctx:
        later = ctx.n_random
        ctx.n_random = trace_pos[1]
        try:
            with replaying(states):
                yield
        finally:
            ctx.n_random = max(later, ctx.n_random)
        return
    if states is None:
        yield
        return
    now = all_states()
    for key in now:               # a generator made since then started from the default seed
        default_generator(key).set_state(states.get(key, (_DEFAULT[0], 0)))
    try:
        yield
    finally:
        for key, state in now.items():
            default_generator(key).set_state(state)


# -- random tensors ------------------------------------------------------------------------------
def _size(op: str, shape) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: size must be ints, got {shape!r} (at {user_location()})") \
            from None
    if any(s < 0 for s in shape):
        raise ValueError(f"{op}: negative dimension in size {list(shape)} "
                         f"(at {user_location()})")
    return shape


def _float_dtype(op: str, dtype) -> dt.DType:
    d = dt.as_dtype(dtype) if dtype is not None else dt.f32
    if not d.is_float:
        raise TypeError(f"{op}: needs a floating-point dtype, got {d.name} "
                        f"(at {user_location()})")
    return d


def own_generator(op: str, generator: Generator | None) -> Generator | None:
    """`generator=` of a random op: None for a device's default generator (what traced draws
    read), the generator itself for one of the user's own, which a trace cannot read."""
    if generator is None or any(generator is g for g in _GENERATORS.values()):
        return None
    if not isinstance(generator, Generator):
        raise TypeError(f"{op}: generator must be a tj.Generator, got "
                        f"{type(generator).__name__} (at {user_location()})")
    if current_trace() is not None:
        # its numbers would be drawn once, at trace time, and baked into the compiled function
        raise RuntimeError(
            f"{op}(generator=...) inside a @tj.compile'd function (at {user_location()}): a "
            f"compiled function can only draw from the default generator (tj.manual_seed); "
            f"drop generator=, or draw outside the compiled function")
    return generator


def _draw(shape: tuple[int, ...], d: dt.DType, normal: bool, device,
          requires_grad: bool = False, generator: Generator | None = None) -> Tensor:
    """Uniform [0, 1) or standard normal numbers: an instruction of the active trace, else
    eager numbers from the device's generator (or `generator`, a user's own, see
    own_generator). 16-bit dtypes are drawn in float32 and rounded."""
    gen_d = d if d in (dt.f32, dt.f64) else dt.f32
    params = {"shape": shape, "dtype": gen_d, "normal": normal}
    ctx = current_trace()
    if generator is not None:
        dev = as_device(device)
        seed, offset = generator.hidden_inputs(1)
        arr = bind(P.random, seed, offset, stream=0, **params)
        out = Tensor(arr if dev.type == "cpu" else to_device(arr, dev))
    elif ctx is not None:
        seed, offset, stream = ctx.random_stream()
        out = Tensor(ctx.graph.emit(P.random, [seed, offset], {**params, "stream": stream}))
    else:
        dev = as_device(device)
        seed, offset = default_generator(dev).hidden_inputs(1)
        arr = bind(P.random, seed, offset, stream=0, **params)
        out = Tensor(arr if dev.type == "cpu" else to_device(arr, dev))
    if gen_d is not d:
        out = ops.cast(out, d)
        if not normal:        # rounding to 16 bits can reach 1.0: keep [0, 1)
            out = ops.minimum(out, 1 - 2.0 ** -(11 if d is dt.f16 else 8))
    if requires_grad:
        out.requires_grad_(True)
    return out


def rand(*size, dtype=None, requires_grad: bool = False, device=None,
         generator: Generator | None = None) -> Tensor:
    """Uniform numbers in [0, 1) (float32 unless `dtype` says otherwise)."""
    return _draw(_size("rand", size), _float_dtype("rand", dtype), False, device, requires_grad,
                 own_generator("rand", generator))


def randn(*size, dtype=None, requires_grad: bool = False, device=None,
          generator: Generator | None = None) -> Tensor:
    """Standard normal numbers (Box-Muller on two Philox words)."""
    return _draw(_size("randn", size), _float_dtype("randn", dtype), True, device, requires_grad,
                 own_generator("randn", generator))


def _like_device(x: Tensor, device):
    if device is not None:
        return device
    return None if x._traced else x.device


def rand_like(x: Tensor, dtype=None, requires_grad: bool = False, device=None,
              memory_format=None) -> Tensor:
    d = _float_dtype("rand_like", dtype if dtype is not None else x.dtype)
    return _draw(tuple(x.shape), d, False, _like_device(x, device), requires_grad)


def randn_like(x: Tensor, dtype=None, requires_grad: bool = False, device=None,
               memory_format=None) -> Tensor:
    d = _float_dtype("randn_like", dtype if dtype is not None else x.dtype)
    return _draw(tuple(x.shape), d, True, _like_device(x, device), requires_grad)


def randint(low: int, high=None, size=None, *, dtype=None, device=None,
            generator: Generator | None = None) -> Tensor:
    """Integers uniform in [low, high): `randint(high, size)` or `randint(low, high, size)`.
    floor(u * (high - low)) + low with a 53-bit uniform u, so the range is at most 2**53."""
    if size is None:
        low, high, size = 0, low, high
    if size is None or high is None:
        raise TypeError(f"randint: expected randint(high, size) or randint(low, high, size) "
                        f"(at {user_location()})")
    low, high = int(low), int(high)
    n = high - low
    if n <= 0 or n > 2 ** 53:
        raise ValueError(f"randint: need low < high and high - low <= 2**53, got [{low}, "
                         f"{high}) (at {user_location()})")
    d = dt.as_dtype(dtype) if dtype is not None else dt.i64
    shape = _size("randint", size if isinstance(size, (tuple, list)) else (size,))
    u = _draw(shape, dt.f64, False, device, generator=own_generator("randint", generator))
    k = ops.minimum(ops.cast(ops.mul(u, float(n)), dt.i64), n - 1)   # u * n rounds up at most
    return ops.cast(ops.add(k, low), d)


def bernoulli(input, p: float | None = None, *, generator: Generator | None = None) -> Tensor:
    """0/1 draws with probabilities `input` (or the scalar `p`), in input's dtype, as
    torch.bernoulli: one uniform u per element, 1 where u < probability."""
    x = input if isinstance(input, Tensor) else ops.as_tensor(input)
    if not x.dtype.is_float:
        raise TypeError(f"bernoulli: needs floating-point probabilities, got {x.dtype.name}"
                        f"{list(x.shape)} (at {user_location()})")
    gen = own_generator("bernoulli", generator)
    u = _draw(tuple(x.shape), dt.f64 if x.dtype is dt.f64 else dt.f32, False,
              _like_device(x, None), generator=gen)
    prob = float(p) if p is not None else x
    return ops.cast(ops.lt(u, prob), x.dtype)


def dropout(x, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero each element with probability p and scale the kept ones by 1/(1-p); the identity
    when not training or p == 0. The mask comes from one uniform draw (kept where u < 1-p) and
    multiplies x, so NaN and inf in dropped elements propagate as in PyTorch, and the gradient
    is the incoming gradient times the same mask."""
    if inplace:
        raise NotImplementedError(f"dropout: inplace=True is not supported "
                                  f"(at {user_location()})")
    p = float(p)
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"dropout: probability has to be between 0 and 1, but got {p} "
                         f"(at {user_location()})")
    x = x if isinstance(x, Tensor) else ops.as_tensor(x)
    if not x.dtype.is_float:
        raise TypeError(f"dropout: needs a floating-point tensor, got {x.dtype.name}"
                        f"{list(x.shape)} (at {user_location()})")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return ops.mul(x, 0.0)
    u = rand_like(x, dtype=dt.f64 if x.dtype is dt.f64 else dt.f32)
    mask = ops.mul(ops.cast(ops.lt(u, 1.0 - p), x.dtype), 1.0 / (1.0 - p))
    return ops.mul(x, mask)
