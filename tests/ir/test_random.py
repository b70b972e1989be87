"""The `random` primitive: Philox4x32-10 against Random123's known answers, the integer-only
conversion to floats, the counter layout (seed, offset + stream, linear index), statistics,
inference errors and the text form."""
from __future__ import annotations

import math

import numpy as np
import pytest

import tracejit as tj
from tracejit.ir import dtypes as dt
from tracejit.ir.core import Aval, Graph
from tracejit.ir.interpret import interpret
from tracejit.ir.parser import parse_graph
from tracejit.ir.primitives import P, bind
from tracejit.ir.printer import print_graph
from tracejit.ir.prims_random import philox4x32_10

# Random123's tests/kat_vectors for philox4x32_10 (also in TensorFlow's philox tests):
# counter (4 words), key (2 words) -> output (4 words)
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,want", KAT)
def test_philox_known_answers(ctr, key, want):
    got = philox4x32_10(ctr, key)
    assert [int(w) for w in got] == list(want)


def _random(seed, offset, shape, stream=0, dtype=dt.f32, normal=False):
    return bind(P.random, np.array(seed, np.int64), np.array(offset, np.int64), shape=shape,
                stream=stream, dtype=dtype, normal=normal)


def test_counter_layout_is_seed_offset_plus_stream_and_linear_index():
    """Element i of a random op is Philox(counter = (i, offset + stream), key = seed)."""
    seed, off = 0x0123456789ABCDEF, 0x1_0000_0005
    u = _random(seed, off, (3, 4), stream=2)
    i = np.arange(12, dtype=np.uint32)
    words = philox4x32_10((i, np.zeros(12), np.full(12, 7), np.full(12, 1)),
                          (0x89ABCDEF, 0x01234567))
    assert np.array_equal(u.reshape(-1), (words[0] >> 8).astype(np.float32) * 2.0 ** -24)
    # the same numbers from a stream number or an offset; the shape only orders them
    assert np.array_equal(u, _random(seed, off + 2, (3, 4)))
    assert np.array_equal(u.reshape(-1), _random(seed, off + 2, (12,)))
    assert np.array_equal(u.reshape(-1)[:5], _random(seed, off + 2, (5,)))
    assert not np.array_equal(u, _random(seed, off + 3, (3, 4)))
    assert not np.array_equal(u, _random(seed + 1, off + 2, (3, 4)))


def test_uniform_floats_are_exact_multiples():
    """float32: 24 random bits times 2**-24; float64: 53 bits times 2**-53; in [0, 1)."""
    f = _random(5, 0, (100000,))
    d = _random(5, 0, (100000,), dtype=dt.f64)
    assert f.dtype == np.float32 and d.dtype == np.float64
    for u, bits in ((f, 24), (d, 53)):
        k = u.astype(np.float64) * 2.0 ** bits
        assert (u >= 0).all() and (u < 1).all()
        assert np.array_equal(k, np.floor(k))
    i = np.arange(100000, dtype=np.uint64)
    w = philox4x32_10((i & 0xFFFFFFFF, i >> 32, np.zeros(100000), np.zeros(100000)), (5, 0))
    k53 = (w[0].astype(np.uint64) << np.uint64(21)) | (w[1].astype(np.uint64) >> np.uint64(11))
    assert np.array_equal(d, k53.astype(np.float64) * 2.0 ** -53)


@pytest.mark.parametrize("dtype", [dt.f32, dt.f64])
def test_statistics(dtype):
    n = 1 << 20
    u = _random(123, 9, (n,), dtype=dtype).astype(np.float64)
    z = _random(123, 10, (n,), dtype=dtype, normal=True).astype(np.float64)
    sem = 1 / math.sqrt(n)
    assert abs(u.mean() - 0.5) < 6 * sem * math.sqrt(1 / 12)
    assert abs(u.var() - 1 / 12) < 6 * sem * math.sqrt(1 / 180)     # var of (u-1/2)**2
    hist = np.histogram(u, bins=16, range=(0, 1))[0]
    expect = n / 16
    assert ((hist - expect) ** 2 / expect).sum() < 60             # chi2, 15 dof: p < 1e-6
    assert np.isfinite(z).all()
    assert abs(z.mean()) < 6 * sem and abs(z.var() - 1) < 6 * sem * math.sqrt(2)
    # the tails: P(|z| > 2) = 0.0455
    assert abs((np.abs(z) > 2).mean() - 0.0455) < 6 * math.sqrt(0.0455 * 0.9545 / n)
    # neighbouring elements and streams are uncorrelated
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 6 * sem
    v = _random(123, 10, (n,), dtype=dtype).astype(np.float64)
    assert abs(np.corrcoef(u, v)[0, 1]) < 6 * sem


def test_sizes_zero_and_one():
    assert _random(1, 2, (0, 3)).shape == (0, 3)
    one = _random(1, 2, ())
    assert one.shape == () and one == _random(1, 2, (1,))[0]


def test_inference_errors_name_the_op():
    with pytest.raises(TypeError, match=r"random: seed must be an i64 scalar, got i32\[\]"):
        bind(P.random, np.array(1, np.int32), np.array(0, np.int64), shape=(2,), stream=0,
             dtype=dt.f32, normal=False)
    with pytest.raises(TypeError, match=r"random: offset must be an i64 scalar, got i64\[2\]"):
        bind(P.random, np.array(1, np.int64), np.zeros(2, np.int64), shape=(2,), stream=0,
             dtype=dt.f32, normal=False)
    with pytest.raises(TypeError, match="random: generates float32 or float64, got i32"):
        _random(1, 0, (2,), dtype=dt.i32)
    with pytest.raises(ValueError, match="random: negative dimension"):
        _random(1, 0, (2, -1))


def test_text_form_round_trips_and_interprets():
    g = Graph("r")
    seed, off = g.add_input(Aval((), dt.i64), "rng_seed"), g.add_input(Aval((), dt.i64),
                                                                          "rng_offset")
    a = g.emit(P.random, [seed, off], {"shape": (2, 3), "stream": 0, "dtype": dt.f32,
                                       "normal": False})
    b = g.emit(P.random, [seed, off], {"shape": (4,), "stream": 1, "dtype": dt.f64,
                                       "normal": True})
    g.outputs = [a, b]
    text = print_graph(g)
    assert "random %rng_seed, %rng_offset {shape=[2,3], stream=0, dtype=f32, normal=false}" \
        in text
    g2 = parse_graph(text)
    assert print_graph(g2) == text
    args = [np.array(-3, np.int64), np.array(2 ** 40, np.int64)]
    for x, y in zip(interpret(g, args), interpret(g2, args)):
        assert np.array_equal(x, y)
    assert np.array_equal(interpret(g, args)[0], _random(-3, 2 ** 40, (2, 3)))


def test_eager_constructors_use_the_primitive():
    """tj.rand at generator state (seed, offset) is the primitive at (seed, offset)."""
    tj.manual_seed(77)
    assert tj.get_rng_state() == (77, 0)
    a = tj.rand(3, 5)
    assert tj.get_rng_state() == (77, 1)            # one stream per op, not per element
    b = tj.randn(4, dtype=tj.float64)
    assert np.array_equal(a.numpy(), _random(77, 0, (3, 5)))
    assert np.array_equal(b.numpy(), _random(77, 1, (4,), dtype=dt.f64, normal=True))
