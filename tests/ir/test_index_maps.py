"""View and index primitives declare their index map and row rule in the registry (issue 11
item 3). The maps are evaluated here with plain integers and compared element by element with
each primitive's NumPy implementation; the row rules are checked against the maps; and a view
op declared in a test (one registration, no edit elsewhere) fuses and runs compiled."""
from __future__ import annotations

import itertools
import shutil
import subprocess

import numpy as np
import pytest

import tracejit as tj
from tracejit.ir import P, bind
from tracejit.ir.core import Aval
from tracejit.ir.index_maps import Position, Read, Select, Site, Zero, strides
from tracejit.ir.primitives import Primitive

VIEWS = ("broadcast", "transpose", "reshape", "slice", "pad", "concatenate", "gather",
         "windows", "iota")


class IntOps:
    """IndexOps over Python integers (index expressions are decimal strings)."""

    def iadd(self, a, b): return str(int(a) + int(b))
    def imul(self, a, k): return str(int(a) * k)
    def icmp(self, op, a, b): return str(int(getattr(int(a), f"__{op}__")(int(b))))
    def iand(self, a, b): return str(int(a) & int(b))
    def clamp(self, a, n): return str(min(max(int(a), 0), n - 1))

    def idiv(self, a, k, signed=False):            # C division: truncates toward zero
        q = abs(int(a)) // k
        return str(-q if int(a) < 0 else q)

    def irem(self, a, k, signed=False):
        return str(int(a) - k * int(self.idiv(a, k)))

    def linear(self, idx, shape):
        return str(sum(int(i) * s for i, s in zip(idx, strides(shape))))

    def wrap_index(self, i, n):
        i = int(i)
        return self.clamp(str(i + n if i < 0 else i), n)


def _evaluate(prim, arrays, params, out_shape):
    """The primitive's output computed element by element from its index map; also every
    operand index each element reads, as (operand, index) pairs."""
    ix = IntOps()
    reads: list[list[tuple[int, tuple[int, ...]]]] = []

    def operand(k, idx):
        at = tuple(int(i) for i in idx)
        reads[-1].append((k, at))
        return arrays[k][at]

    site = Site(tuple(a.shape for a in arrays), tuple(out_shape), operand)

    def value(acc, out_idx):
        if isinstance(acc, Read):
            at = tuple(int(i) for i in acc.vector())
            reads[-1].append((acc.k, at))
            got = arrays[acc.k][at]
            if acc.same_offset:           # the buffer shortcut reads the same element
                flat = int(ix.linear([str(i) for i in out_idx], out_shape))
                assert arrays[acc.k].reshape(-1)[flat] == got
            return got
        if isinstance(acc, Position):
            return int(acc.index)
        if isinstance(acc, Zero):
            return 0
        assert isinstance(acc, Select)
        return value(acc.then if int(acc.cond) else acc.other, out_idx)

    dtype = np.int64 if prim.name == "iota" else arrays[0].dtype
    out = np.zeros(out_shape, dtype)
    per_element = {}
    for out_idx in itertools.product(*map(range, out_shape)):
        reads.append([])
        acc = prim.index_map(ix, [str(i) for i in out_idx], site, **params)
        out[out_idx] = value(acc, out_idx)
        per_element[out_idx] = reads[-1]
    return out, per_element


def _x(*shape):
    return np.arange(1, 1 + int(np.prod(shape)), dtype=np.float64).reshape(shape)


CASES = [
    ("broadcast", [_x(3, 1)], {"shape": (2, 3, 4)}),
    ("broadcast", [_x(4)], {"shape": (3, 4)}),
    ("broadcast", [_x()], {"shape": (2, 2)}),
    ("transpose", [_x(2, 3, 4)], {"perm": (2, 0, 1)}),
    ("reshape", [_x(2, 3, 4)], {"shape": (6, 4)}),
    ("reshape", [_x(4, 6)], {"shape": (2, 12)}),
    ("reshape", [_x(2, 1, 3)], {"shape": (2, 3)}),
    ("reshape", [_x(6)], {"shape": (2, 3)}),
    ("reshape", [_x(2, 6)], {"shape": (3, 4)}),
    ("slice", [_x(5, 7)], {"starts": (1, 0), "stops": (5, 7), "steps": (2, 3)}),
    ("pad", [_x(2, 3)], {"lo": (1, 0), "hi": (0, 2), "interior": (1, 2)}),
    ("pad", [_x(0, 3)], {"lo": (1, 0), "hi": (1, 0), "interior": (0, 0)}),
    ("concatenate", [_x(2, 1), _x(2, 0), _x(2, 3)], {"axis": 1}),
    ("concatenate", [_x(1, 3), _x(2, 3)], {"axis": 0}),
    ("gather", [_x(4, 5), np.array([[3, -1], [0, -4]])], {"axis": 1}),
    ("gather", [_x(4, 5), np.array([2, -2, 0])], {"axis": 0}),
    ("windows", [_x(1, 2, 5, 6)], {"window": (2, 3), "stride": (2, 1), "dilation": (1, 2)}),
    ("iota", [_x(3, 4)], {"axis": 1}),
]


def _out_shape(name, arrays, params):
    prim = P.get(name)
    avals = [Aval(a.shape, tj.float64 if a.dtype == np.float64 else tj.int64) for a in arrays]
    return prim.infer(avals, prim.normalize(params)).shape


@pytest.mark.parametrize("name", VIEWS)
def test_every_view_primitive_declares_its_index_map_and_rows(name):
    prim = P.get(name)
    assert prim.index_map is not None and prim.rows is not None


def test_no_shape_primitive_without_an_index_map():
    # a fused kernel evaluates shape ops through their index maps: one without would not fuse
    assert [p.name for p in P if p.kind == "shape" and p.index_map is None] == []


@pytest.mark.parametrize("name,arrays,params", CASES,
                         ids=[f"{c[0]}{i}" for i, c in enumerate(CASES)])
def test_index_map_matches_the_numpy_implementation(name, arrays, params):
    prim = P.get(name)
    params = prim.normalize(params)
    shape = _out_shape(name, arrays, params)
    got, _ = _evaluate(prim, arrays, params, shape)
    want = np.asarray(prim.impl(*arrays, **params))
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name,arrays,params", CASES,
                         ids=[f"{c[0]}{i}" for i, c in enumerate(CASES)])
def test_row_rules_are_sound(name, arrays, params):
    """Where a primitive's rule says it keeps the first j axes of the operands in `dep`, every
    output element reads those operands only at its own first j indices."""
    prim = P.get(name)
    params = prim.normalize(params)
    shape = _out_shape(name, arrays, params)
    _, reads = _evaluate(prim, arrays, params, shape)
    in_shapes = [a.shape for a in arrays]
    for j in range(1, len(shape) + 1):
        for dep in itertools.product([False, True], repeat=len(arrays)):
            if not any(dep) or any(d and tuple(s[:j]) != tuple(shape[:j])
                                   for d, s in zip(dep, in_shapes)):
                continue        # fusion only asks when the row axes agree
            if not prim.keeps_rows(j, in_shapes, tuple(shape), dep, params):
                continue
            for out_idx, rs in reads.items():
                for k, at in rs:
                    if dep[k]:
                        assert at[:j] == out_idx[:j], (name, j, dep, out_idx, k, at)


def test_row_rules_refuse_what_would_cross_rows():
    assert not P.transpose.keeps_rows(1, [(3, 4)], (4, 3), [True], {"perm": (1, 0)})
    assert not P.slice.keeps_rows(1, [(4, 4)], (2, 4), [True],
                                  {"starts": (1, 0), "stops": (3, 4), "steps": (1, 1)})
    assert not P.gather.keeps_rows(1, [(4, 5), (4, 2)], (4, 2), [False, True], {"axis": 1})
    assert P.gather.keeps_rows(1, [(4, 5), (4, 2)], (4, 2), [True, False], {"axis": 1})
    assert not P.sum.keeps_rows(1, [(4, 5)], (5,), [True], {"axes": (0,)})
    assert P.add.keeps_rows(1, [(4, 5), (4, 5)], (4, 5), [True, True], {})
    assert not P.matmul.keeps_rows(1, [(4, 5), (5, 2)], (4, 2), [True, False], {})


# -- a new view op is one declaration -------------------------------------------------------------
def _index_reverse(ix, idx, site):
    n = site.in_shapes[0][-1]
    return Read(0, list(idx[:-1]) + [ix.iadd(str(n - 1), ix.imul(idx[-1], -1))])


@pytest.fixture
def reverse_prim():
    prim = Primitive("test_reverse_last", "shape", lambda name, avals: avals[0],
                     lambda x: np.flip(x, -1).copy(),
                     vjp=lambda g, i, o, p, n: [bind(P.test_reverse_last, g)], arity=1,
                     index_map=_index_reverse, rows=lambda j, ins, out, dep: j < len(out))
    P.register(prim)
    yield prim
    del P._prims[prim.name]
    delattr(P, prim.name)


def test_a_view_declared_once_fuses_and_runs_compiled(reverse_prim):
    x = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)

    @tj.compile
    def f(t):
        return tj.exp(bind(reverse_prim, t)) * 2 + t

    np.testing.assert_allclose(f(x).numpy(), np.exp(x[:, ::-1]) * 2 + x, rtol=1e-6)
    kernels = f.lower(x).kernels.splitlines()
    assert len(kernels) == 1 and "test_reverse_last" in kernels[0]   # one fused loop

    @tj.compile
    def g(t):          # its row rule lets a softmax over the reversed rows run per row
        return tj.softmax(bind(reverse_prim, t) * 3, -1)

    e = np.exp(3 * x[:, ::-1] - (3 * x).max(-1, keepdims=True))
    np.testing.assert_allclose(g(x).numpy(), e / e.sum(-1, keepdims=True), rtol=1e-5)
    assert [k.split()[1] for k in g.lower(x).kernels.splitlines()] == ["rows"]

    # its VJP (the reversal again) runs in the compiled backward as a fused view too
    dx = tj.grad(tj.compile(lambda t: (tj.exp(bind(reverse_prim, t)) * 2 + t).sum()))(x)
    np.testing.assert_allclose(dx.numpy(), 2 * np.exp(x) + 1, rtol=1e-5)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_the_declared_view_lowers_to_cuda_that_nvcc_compiles(reverse_prim, fake_gpu, tmp_path):
    x = np.zeros((5, 7), np.float32)
    src = tj.compile(lambda a: tj.softmax(tj.exp(bind(reverse_prim, a)), -1) * 2,
                     device="cuda").lower(x).cuda_source
    cu = tmp_path / "k.cu"
    cu.write_text(src)
    r = subprocess.run(["nvcc", "-ptx", "-arch=sm_90", "-o", str(tmp_path / "k.ptx"), str(cu)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
def test_a_view_declared_once_runs_on_the_gpu(reverse_prim):
    """The same declaration drives the CUDA kernels: a fused loop, a row softmax and the
    compiled gradient on the device, against NumPy."""
    x = np.random.default_rng(1).standard_normal((37, 129)).astype(np.float32)
    t = tj.tensor(x, device="cuda")
    f = tj.compile(lambda a: tj.exp(bind(reverse_prim, a)) * 2 + a)
    np.testing.assert_allclose(f(t).cpu().numpy(), np.exp(x[:, ::-1]) * 2 + x, rtol=1e-5)
    g = tj.compile(lambda a: tj.softmax(bind(reverse_prim, a) * 3, -1))
    e = np.exp(3 * x[:, ::-1] - (3 * x).max(-1, keepdims=True))
    np.testing.assert_allclose(g(t).cpu().numpy(), e / e.sum(-1, keepdims=True), rtol=1e-5,
                               atol=1e-7)
    dx = tj.grad(tj.compile(lambda a: (tj.exp(bind(reverse_prim, a)) * 2 + a).sum()))(t)
    assert dx.device == "cuda:0"
    np.testing.assert_allclose(dx.cpu().numpy(), 2 * np.exp(x) + 1, rtol=1e-5)
