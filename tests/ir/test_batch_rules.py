"""Every primitive's batching rule against a Python loop over the examples, for every choice of
batched operands; the batching transform of whole graphs against the interpreter in a loop."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from tracejit.ir import P, dtypes as dt
from tracejit.ir.batching import BatchAxis, batch_graph
from tracejit.ir.core import Aval, Graph
from tracejit.ir.interpret import interpret

B = 3
rng = np.random.default_rng(0)


def f64(*shape):
    return rng.standard_normal(shape)


def pos(*shape):
    return rng.uniform(0.5, 2.0, shape)


def ints(*shape, lo=-4, hi=5):
    return rng.integers(lo, hi, shape).astype(np.int64)


def well_posed(*shape):
    """Diagonally dominant (so positive definite read from either triangle), well separated
    diagonal: invertible and factorable after the +-50% perturbations of the batch."""
    n = shape[-1]
    return 0.2 * rng.standard_normal(shape) + np.eye(shape[-2], n) * np.arange(1.0, n + 1.0) * 2.0


_CONV = dict(stride=(1, 2), padding=(1, 0, 1, 1), dilation=(1, 1), groups=2)
_CONV3 = dict(stride=(1, 2, 1), padding=(1, 0, 1, 1, 0, 0), dilation=(1, 1, 1), groups=2)

# name -> [(operands (one example each), params)]
SAMPLES = {
    "neg": [([f64(3, 4)], {})], "exp": [([f64(3, 4)], {})], "log": [([pos(3, 4)], {})],
    "sin": [([f64(3, 4)], {})], "cos": [([f64(3, 4)], {})], "tanh": [([f64(3, 4)], {})],
    "sqrt": [([pos(3, 4)], {})], "abs": [([f64(3, 4)], {})], "sign": [([f64(3, 4)], {})],
    "stop_gradient": [([f64(3, 4)], {})], "reciprocal": [([pos(3, 4)], {})],
    "erf": [([f64(3, 4)], {})], "erfc": [([f64(3, 4)], {})],
    # ir/prims_libm.py
    **{n: [([pos(3, 4) * 0.45], {})] for n in ("tan", "asin", "acos", "atanh", "log2", "log10")},
    **{n: [([f64(3, 4)], {})] for n in ("atan", "sinh", "cosh", "asinh", "exp2")},
    "acosh": [([pos(3, 4) + 1.0], {})], "atan2": [([f64(3, 4), f64(3, 4)], {})],
    "signbit": [([f64(3, 4)], {})],
    # ir/prims_gamma.py (and lgamma, nextafter of prims_libm.py)
    **{n: [([pos(3, 4)], {})] for n in ("lgamma", "digamma", "i0", "i0e", "i1", "i1e",
                                        "erfcx")},
    "polygamma": [([pos(3, 4)], {"n": 1})],
    **{n: [([pos(3, 4) * 0.45], {})] for n in ("erfinv", "ndtri")},
    "nextafter": [([f64(3, 4), f64(3, 4)], {})],
    "zeta": [([pos(3, 4) + 1.0, pos(3, 4)], {})],
    # ir/prims_linalg.py, prims_linalg_spectral.py: a leading batch axis of matrices
    **{n: [([well_posed(2, 3, 3)], {})] for n in (
        "linalg_cofactor", "linalg_det", "linalg_detsign", "linalg_logabsdet",
        "linalg_inv_info", "linalg_cholesky_info")},
    **{n: [([well_posed(2, 3, 3)], {"ex": False})] for n in ("linalg_inv", "linalg_cholesky")},
    **{n: [([well_posed(2, 3, 3)], {"lower": True})]
       for n in ("linalg_eigh_vals", "linalg_eigh_vecs")},
    "linalg_solve": [([well_posed(2, 3, 3), f64(2, 3, 2)], {})],
    "linalg_trisolve": [([well_posed(2, 3, 3), f64(2, 3, 2)], {"upper": True, "unit": False})],
    **{n: [([well_posed(4, 3)], {"complete": True})] for n in ("linalg_qr_q", "linalg_qr_r")},
    **{n: [([well_posed(2, 4, 3)], {"full": False})]
       for n in ("linalg_svd_u", "linalg_svd_s", "linalg_svd_vh")},
    "linalg_pinv": [([well_posed(3, 4)], {"rtol": 1e-12, "atol": 0.0})],
    "cast": [([f64(3, 4)], {"dtype": dt.i32}), ([ints(3, 4)], {"dtype": dt.f32})],
    "add": [([f64(3, 4), f64(3, 4)], {})], "sub": [([f64(3, 4), f64(3, 4)], {})],
    "mul": [([f64(3, 4), f64(3, 4)], {})], "div": [([f64(3, 4), pos(3, 4)], {})],
    "pow": [([pos(3, 4), f64(3, 4)], {}), ([ints(3, 4), ints(3, 4, lo=0, hi=4)], {})],
    "maximum": [([f64(3, 4), f64(3, 4)], {})], "minimum": [([f64(3, 4), f64(3, 4)], {})],
    "floor_divide": [([f64(3, 4), pos(3, 4)], {}), ([ints(3, 4), ints(3, 4)], {})],
    "remainder": [([f64(3, 4), pos(3, 4)], {}), ([ints(3, 4), ints(3, 4)], {})],
    "fmod": [([f64(3, 4), pos(3, 4)], {}), ([ints(3, 4), ints(3, 4)], {})],
    **{c: [([ints(3, 4), ints(3, 4)], {})] for c in ("lt", "le", "gt", "ge", "eq", "ne")},
    **{c: [([ints(3, 4, lo=-9, hi=9), ints(3, 4, lo=-9, hi=9)], {}),
           ([f64(3, 4) > 0, f64(3, 4) > 0], {})]
       for c in ("bitwise_and", "bitwise_or", "bitwise_xor")},
    "bitwise_not": [([ints(3, 4, lo=-9, hi=9)], {}), ([f64(3, 4) > 0], {})],
    **{c: [([ints(3, 4, lo=-9, hi=9), ints(3, 4, lo=-2, hi=70)], {}),
           ([ints(3, 4).astype(np.uint8), ints(3, 4, lo=0, hi=10).astype(np.uint8)], {})]
       for c in ("bitwise_left_shift", "bitwise_right_shift")},
    "where": [([f64(3, 4) > 0, f64(3, 4), f64(3, 4)], {})],
    "sum": [([f64(3, 4)], {"axes": (1,)}), ([f64(3, 4)], {"axes": (0, 1)}),
            ([f64(3, 4)], {"axes": ()})],
    "max": [([f64(3, 4)], {"axes": (0,)})], "min": [([f64(2, 3, 4)], {"axes": (0, 2)})],
    "argmax": [([f64(3, 4)], {"axis": 1})], "argmin": [([f64(3, 4)], {"axis": 0})],
    "reshape": [([f64(3, 4)], {"shape": (2, 6)}), ([f64(3, 4)], {"shape": (12,)})],
    "broadcast": [([f64(4)], {"shape": (2, 3, 4)}), ([f64(3, 1)], {"shape": (3, 5)}),
                  ([f64()], {"shape": (2,)})],
    "transpose": [([f64(2, 3, 4)], {"perm": (2, 0, 1)})],
    "slice": [([f64(5, 6)], {"starts": (1, 0), "stops": (5, 6), "steps": (2, 3)})],
    "pad": [([f64(2, 3)], {"lo": (1, 0), "hi": (0, 2), "interior": (1, 1)})],
    "concatenate": [([f64(2, 3), f64(2, 1), f64(2, 2)], {"axis": 1})],
    "gather": [([f64(5, 4), ints(2, 3, lo=-5, hi=5)], {"axis": 0}),
               ([f64(3, 5, 2), ints(4, lo=-5, hi=5)], {"axis": 1}),
               ([f64(3, 4), ints(2, lo=0, hi=4).astype(np.int32)], {"axis": 1})],
    "take_along": [([f64(3, 5), ints(3, lo=-5, hi=5)], {"axis": 1}),
                   ([f64(4, 3, 2), ints(3, 2, lo=0, hi=4).astype(np.int32)], {"axis": 0})],
    "scatter_add": [([ints(2, 3, lo=-5, hi=5), f64(2, 3, 4)], {"axis": 0, "shape": (5, 4)}),
                    ([ints(4, lo=0, hi=5), f64(3, 4, 2)], {"axis": 1, "shape": (3, 5, 2)})],
    "matmul": [([f64(3, 4), f64(4, 2)], {}), ([f64(2, 3, 4), f64(2, 4, 5)], {}),
               ([f64(3, 1), f64(1, 2)], {})],
    "constant": [([], {"value": np.arange(3.0)})],
    "iota": [([f64(3, 4)], {"axis": 1})],
    "random": [([np.array(7, np.int64), np.array(5, np.int64)],
                {"shape": (2, 3), "stream": 1, "dtype": dt.f32, "normal": False})],
    "cumsum": [([f64(3, 4)], {"axis": 1, "reverse": True})],
    "cumprod": [([f64(3, 4)], {"axis": 0, "reverse": False})],
    "argsort": [([ints(3, 4)], {"axis": 1, "descending": True})],
    "argtopk": [([ints(3, 4)], {"axis": 1, "k": 2, "descending": True}),
                ([ints(3, 200)], {"axis": 1, "k": 5, "descending": False})],   # partitioned
    "dist_all_reduce": [([f64(3, 4), f64(3, 4)], {"op": 0})],   # no group: a world of 1
    "dist_all_reduce_start": [([f64(3, 4), f64(3, 4)], {"op": 0})],
    "dist_all_reduce_wait": [([f64(3, 4), np.array(0), f64(3, 4)], {"op": 0})],
    "dist_bucket_start": [([f64(3, 4), f64(5), f64(3, 4)], {"op": 0})],
    "dist_bucket_wait": [([np.array(0), f64(2), f64(3, 4), f64(5)], {"op": 0})],
    "windows": [([f64(2, 6, 5)], {"window": (2, 3), "stride": (2, 1), "dilation": (1, 2)}),
                ([f64(2, 4, 5, 3)], {"window": (2, 2, 1), "stride": (1, 2, 1),
                                     "dilation": (2, 1, 1)})],
    "window_taps": [([f64(2, 2, 3, 4, 3)], {"hw": (6, 5), "stride": (2, 1), "dilation": (1, 2),
                                            "lo": (1, 0)}),
                    ([f64(2, 2, 1, 2, 3, 2, 3)], {"hw": (4, 5, 3), "stride": (1, 2, 1),
                                                  "dilation": (2, 1, 1), "lo": (0, 1, 0)})],
    "conv2d": [([f64(2, 4, 6, 5), f64(6, 2, 3, 2)], _CONV)],
    "conv2d_input_grad": [([f64(2, 6, 5, 3), f64(6, 2, 3, 2)], {"in_hw": (6, 5), **_CONV})],
    "conv2d_weight_grad": [([f64(2, 4, 6, 5), f64(2, 6, 5, 3)], {"kernel": (3, 2), **_CONV})],
    "conv3d": [([f64(2, 4, 3, 5, 3), f64(4, 2, 2, 3, 2)], _CONV3)],
    "conv3d_input_grad": [([f64(2, 4, 3, 3, 2), f64(4, 2, 2, 3, 2)],
                           {"in_hw": (3, 5, 3), **_CONV3})],
    "conv3d_weight_grad": [([f64(2, 4, 3, 5, 3), f64(2, 4, 3, 3, 2)],
                            {"kernel": (2, 3, 2), **_CONV3})],
}


def test_every_primitive_has_a_rule_and_a_sample():
    names = {p.name for p in P}
    assert not [p.name for p in P if p.batch is None]
    assert names == set(SAMPLES), (names ^ set(SAMPLES))


def _batched_operand(x, rs):
    """B examples: x itself and perturbations of it (integers stay in their range)."""
    if x.dtype == bool:
        return np.stack([x ^ (rs.random(x.shape) < 0.3) for _ in range(B)])
    if x.dtype.kind in "iu":
        return np.stack([rs.permutation(x.reshape(-1)).reshape(x.shape) for _ in range(B)])
    return np.stack([x * rs.uniform(0.5, 1.5, x.shape) for _ in range(B)])


def _loop(prim, operands, batched, params):
    outs = [prim.impl(*[a[i] if b else a for a, b in zip(operands, batched)], **params)
            for i in range(B)]
    return np.stack([np.asarray(o) for o in outs])


def _one_instruction(prim, operands, mask, params, ax=None):
    """The batched form of a graph holding one `prim` instruction, run by the interpreter."""
    g = Graph(prim.name)
    ins = [g.add_input(Aval(a.shape[1:] if m else a.shape, dt.from_numpy(a.dtype)))
           for a, m in zip(operands, mask)]
    g.outputs = [g.emit(prim, ins, params)]
    bg, out_b = batch_graph(g, mask, ax or BatchAxis(B))
    return interpret(bg, operands)[0], out_b[0]


CASES = [(name, k, mask) for name, samples in sorted(SAMPLES.items())
         for k, (ops, _) in enumerate(samples)
         for mask in itertools.product((False, True), repeat=len(ops)) if any(mask)
         and name != "random"]


IDS = [f"{n}-{k}-{''.join('b' if m else 'u' for m in mask)}" for n, k, mask in CASES]


@pytest.mark.parametrize("name,k,mask", CASES, ids=IDS)
def test_rule_matches_loop(name, k, mask):
    prim = P.get(name)
    ops, params = SAMPLES[name][k]
    params = prim.normalize(params)
    rs = np.random.default_rng(hash((name, k, mask)) % 2**32)
    operands = [_batched_operand(x, rs) if m else x for x, m in zip(ops, mask)]
    out, out_b = _one_instruction(prim, operands, mask, params)
    want = _loop(prim, operands, mask, params)
    assert out_b
    assert out.dtype == want.dtype and out.shape == want.shape
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


def test_rule_batch_of_one_and_empty_batch():
    prim = P.matmul
    a, b = f64(1, 3, 4), f64(4, 2)
    out, _ = _one_instruction(prim, [a, b], [True, False], {}, BatchAxis(1))
    np.testing.assert_allclose(out, a @ b)
    a0 = np.zeros((0, 3, 4))
    out, _ = _one_instruction(prim, [a0, b], [True, False], {}, BatchAxis(0))
    assert out.shape == (0, 3, 2)
    out, _ = _one_instruction(prim, [f64(3, 4), np.zeros((0, 4, 2))], [False, True], {},
                              BatchAxis(0))
    assert out.shape == (0, 3, 2)


def test_gather_out_of_range_index_is_not_read_from_another_example():
    x, idx = f64(B, 5, 4), np.array([[0, 5], [1, 2], [0, 0]])     # 5: out of range in example 0
    with pytest.raises(IndexError):
        _one_instruction(P.gather, [x, idx], [True, True], {"axis": 0})


def test_random_rule_modes():
    seed, off = np.array(7, np.int64), np.array(5, np.int64)
    params = P.random.normalize({"shape": (2, 3), "stream": 1, "dtype": dt.f32, "normal": False})
    same, b = P.random.batch(P.random, BatchAxis(B, "same"), [seed, off], [False, False], params)
    assert not b and same.shape == (2, 3)
    diff, b = P.random.batch(P.random, BatchAxis(B, "different"), [seed, off], [False, False],
                             params)
    assert b and diff.shape == (B, 2, 3)
    assert len({diff[i].tobytes() for i in range(B)}) == B        # each example its own
    with pytest.raises(RuntimeError, match="randomness='different'"):
        P.random.batch(P.random, BatchAxis(B, "error"), [seed, off], [False, False], params)


def _mlp_graph() -> Graph:
    g = Graph("mlp")
    x = g.add_input(Aval((4,), dt.f64), "x")
    w = g.add_input(Aval((4, 3), dt.f64), "w")
    xr = g.emit(P.reshape, [x], {"shape": (1, 4)})
    h = g.emit(P.matmul, [xr, w], {})
    t = g.emit(P.tanh, [h], {})
    s = g.emit(P.sum, [t], {"axes": (0, 1)})
    g.outputs = [s, t, w]
    return g


@pytest.mark.parametrize("in_batched", [(True, False), (False, True), (True, True)])
def test_batch_graph_matches_interpreter_loop(in_batched):
    g = _mlp_graph()
    xs, ws = f64(B, 4), f64(B, 4, 3)
    x1, w1 = f64(4), f64(4, 3)
    args = [xs if in_batched[0] else x1, ws if in_batched[1] else w1]
    bg, out_b = batch_graph(g, in_batched, BatchAxis(B))
    outs = interpret(bg, args)
    assert out_b == [True, True, in_batched[1]]
    for i in range(B):
        ex = [a[i] if b else a for a, b in zip(args, in_batched)]
        for o, ob, want in zip(outs, out_b, interpret(g, ex)):
            np.testing.assert_allclose(o[i] if ob else o, want, rtol=1e-12)


def test_batch_graph_matmul_with_one_batched_side_is_one_2d_gemm():
    g = _mlp_graph()
    bg, _ = batch_graph(g, [True, False], BatchAxis(64))
    mms = [ins for ins in bg.instrs if ins.prim is P.matmul]
    assert len(mms) == 1 and mms[0].inputs[0].shape == (64, 4)      # the batch joined the rows
    assert mms[0].inputs[1].shape == (4, 3)                          # the weight read as is


def test_batch_graph_unbatched_part_stays_unbatched():
    g = Graph("f")
    x = g.add_input(Aval((3,), dt.f64), "x")
    w = g.add_input(Aval((3,), dt.f64), "w")
    ew = g.emit(P.exp, [w], {})
    y = g.emit(P.mul, [x, ew], {})
    g.outputs = [y, ew]
    bg, out_b = batch_graph(g, [True, False], BatchAxis(5))
    assert out_b == [True, False]
    exp = [ins for ins in bg.instrs if ins.prim is P.exp]
    assert exp[0].out.shape == (3,)                  # computed once, not per example
