"""Random numbers: the `random` primitive and the Philox4x32-10 generator behind it.

`random(seed, offset) {shape, stream, dtype, normal}` fills `shape` with uniform numbers in
[0, 1) (or standard normal ones with `normal=true`). It is a pure function of
(seed, offset + stream, linear index of the element), so it fuses into loop kernels like an
elementwise op, and eager mode, the interpreter, the LLVM and the CUDA lowering all compute the
same numbers:

- Philox4x32-10 (Salmon et al., SC'11; Random123's reference constants) with key
  (seed low 32 bits, seed high 32 bits) and counter (index low, index high,
  (offset + stream) low, (offset + stream) high); one block of four 32-bit words per element.
- uniform float32: the top 24 bits of word 0 times 2**-24; float64: 53 bits (32 of word 0,
  the top 21 of word 1) times 2**-53. Integer-only, so every backend gets the same bits.
- normal: Box-Muller, sqrt(-2 log u1) * cos(2 pi u2), with u1 in (0, 1] (the integer plus one,
  so log never sees 0) from the first word(s) and u2 in [0, 1) from the next. The transform
  uses each backend's log/cos/sqrt, so normals agree to a few ulp, not bit for bit.

Scalar rules need a few 32-bit unsigned integer operations that no IR dtype has; the scalar
builders provide them as `u32_*` methods on plain value references (see llvm_expr, cuda_expr).
"""
from __future__ import annotations

import math

import numpy as np

from . import dtypes as dt
from .batching import batch_random
from .core import Aval
from .primitives import P, Primitive, op_error

# Philox4x32 multipliers and Weyl key increments (Random123)
M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
ROUNDS = 10
_MASK = np.uint64(0xFFFFFFFF)


CHUNK = 1 << 16          # elements per pass: the temporaries of a round stay in cache


def philox4x32_10(ctr: tuple, key: tuple) -> list[np.ndarray]:
    """Philox4x32-10 on arrays of 32-bit words: ctr is four words, key two (broadcastable);
    returns four uint32 words of the counter's shape."""
    c = [np.asarray(x).astype(np.uint64) for x in ctr]
    shape = np.broadcast_shapes(*(x.shape for x in c))
    n = math.prod(shape)
    # words shared by every element stay scalars; the others are flat arrays
    flat = [x.reshape(-1)[0] if x.size == 1 else
            np.ascontiguousarray(np.broadcast_to(x, shape)).reshape(-1) for x in c]
    out = [np.empty(n, np.uint32) for _ in range(4)]
    k0, k1 = (int(np.asarray(x).astype(np.uint64)) & 0xFFFFFFFF for x in key)
    for lo in range(0, n, CHUNK):
        words = _rounds([x if x.ndim == 0 else x[lo:lo + CHUNK] for x in flat], k0, k1)
        for o, w in zip(out, words):
            o[lo:lo + CHUNK] = w
    return [o.reshape(shape) for o in out]


def _rounds(c: list[np.ndarray], k0: int, k1: int) -> list[np.ndarray]:
    """Ten rounds on uint64 arrays holding 32-bit words (products fit in 64 bits)."""
    m0, m1, shift = np.uint64(M0), np.uint64(M1), np.uint64(32)
    c0, c1, c2, c3 = c
    for r in range(ROUNDS):
        if r:
            k0, k1 = (k0 + W0) & 0xFFFFFFFF, (k1 + W1) & 0xFFFFFFFF
        p0, p1 = c0 * m0, c2 * m1
        c0 = (p1 >> shift) ^ c1 ^ np.uint64(k0)
        c2 = (p0 >> shift) ^ c3 ^ np.uint64(k1)
        c1, c3 = p1 & _MASK, p0 & _MASK
    return [c0, c1, c2, c3]


def _split64(x) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x).astype(np.uint64)       # int64 -> uint64 keeps the bits
    return (x & _MASK).astype(np.uint32), (x >> np.uint64(32)).astype(np.uint32)


def _unit(words: list[np.ndarray], d: dt.DType, plus_one: bool) -> np.ndarray:
    """Words -> floats in [0, 1) (or (0, 1] with plus_one), by integer arithmetic only."""
    if d is dt.f32:
        k = (words[0] >> np.uint32(8)).astype(np.uint32) + np.uint32(plus_one)
        return k.astype(np.float32) * np.float32(2.0 ** -24)
    k = (words[0].astype(np.uint64) << np.uint64(21)) | \
        (words[1].astype(np.uint64) >> np.uint64(11))
    return (k + np.uint64(plus_one)).astype(np.float64) * 2.0 ** -53


def _impl(seed, offset, shape, stream, dtype, normal):
    n = math.prod(shape)
    key = _split64(seed)
    idx = np.arange(n, dtype=np.uint64)
    idx_lo, idx_hi = (idx & _MASK, idx >> np.uint64(32)) if n > 1 << 32 else (idx, 0)
    base = np.asarray(offset).astype(np.uint64) + np.uint64(stream)   # wraps mod 2**64
    c_lo, c_hi = _split64(base)
    w = philox4x32_10((idx_lo, idx_hi, c_lo, c_hi), key)
    d = dt.as_dtype(dtype)
    if not normal:
        return _unit(w, d, False).reshape(shape)
    half = 1 if d is dt.f32 else 2
    u1 = _unit(w[:half], d, True)
    u2 = _unit(w[half:], d, False)
    f = d.np.type
    with np.errstate(all="ignore"):
        r = np.sqrt(f(-2.0) * np.log(u1))
        z = r * np.cos(f(2 * math.pi) * u2)
    return z.astype(d.np).reshape(shape)


def _infer(name, avals, shape, stream, dtype, normal):
    for a, what in zip(avals, ("seed", "offset")):
        if a.shape != () or a.dtype is not dt.i64:
            raise op_error(name, f"{what} must be an i64 scalar, got {a}", TypeError)
    if dtype not in (dt.f32, dt.f64):
        raise op_error(name, f"generates float32 or float64, got {dtype.name}", TypeError)
    if any(s < 0 for s in shape):
        raise op_error(name, f"negative dimension in shape {list(shape)}")
    return Aval(shape, dtype)


def _scalar(sb, seed, offset, index, shape, stream, dtype, normal):
    """The same function as `_impl`, for one element, on a backend's scalar builder. `seed`,
    `offset` and `index` (the element's linear index) are i64 scalars."""
    ctr = sb.add(offset, sb.literal(stream, dt.i64)) if stream else offset
    c = [sb.u32_word(index, 0), sb.u32_word(index, 1), sb.u32_word(ctr, 0), sb.u32_word(ctr, 1)]
    k = [sb.u32_word(seed, 0), sb.u32_word(seed, 1)]
    for r in range(ROUNDS):
        if r:
            k = [sb.u32_add(k[0], W0), sb.u32_add(k[1], W1)]
        hi0, lo0 = sb.u32_mulhilo(c[0], M0)
        hi1, lo1 = sb.u32_mulhilo(c[2], M1)
        c = [sb.u32_xor(sb.u32_xor(hi1, c[1]), k[0]), lo1,
             sb.u32_xor(sb.u32_xor(hi0, c[3]), k[1]), lo0]
    if not normal:
        return sb.u32_unit(c, dtype, False)
    half = 1 if dtype is dt.f32 else 2
    u1 = sb.u32_unit(c[:half], dtype, True)
    u2 = sb.u32_unit(c[half:], dtype, False)
    r = sb.sqrt(sb.mul(sb.literal(-2.0, dtype), sb.log(u1)))
    return sb.mul(r, sb.cos(sb.mul(sb.literal(2 * math.pi, dtype), u2)))


P.register(Primitive(
    "random", "random", _infer, _impl, scalar=_scalar, arity=2, jvp=lambda t, i, o, p: None,
    params={"shape": "ints", "stream": "int", "dtype": "dtype", "normal": "bool"},
    batch=batch_random))
