"""Backend-neutral evaluation of a fused expression at an index vector.

A kernel computes each output element as an expression over its producers. Elementwise ops
call the primitive's `scalar` rule on a backend's scalar builder; view ops (broadcast,
transpose, slice, reshape, pad, concatenate, gather) only rewrite the index vector. That index
logic lives here once; the LLVM and CUDA emitters supply the integer operations, loads and the
scalar builder."""
from __future__ import annotations

from ..ir import dtypes as dt
from ..ir.core import Value


def compute_dtype(d: dt.DType) -> dt.DType:
    """Arithmetic type of a stored dtype: 16-bit floats compute in float32."""
    return dt.f32 if d in dt.HALF else d


class Scalar:
    """A scalar in generated code: how the backend names it (an SSA name, a C local or a
    literal) and its compute dtype. Subclasses give `TYPES`, dtype name -> backend type."""

    __slots__ = ("ref", "dtype")
    TYPES: dict[str, str] = {}

    def __init__(self, ref: str, dtype: dt.DType) -> None:
        self.ref, self.dtype = ref, compute_dtype(dtype)

    @property
    def ty(self) -> str:
        return self.TYPES[self.dtype.name]


def strides(shape) -> list[int]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def _is_int_literal(a: str) -> bool:
    return a.lstrip("-").isdigit()


def _reshape_runs(a, b) -> list[tuple[list[int], list[int]]]:
    """Pair up runs of axes of shapes a and b (same size) whose products agree; each run of
    a is merged or split into its run of b."""
    if 0 in a or 0 in b:              # no elements: the loop never runs, one run will do
        return [(list(range(len(a))), list(range(len(b))))]
    runs, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        ra, rb = [], []
        pa = pb = 1
        while True:
            if (pa <= pb or j == len(b)) and i < len(a):
                pa *= a[i]
                ra.append(i)
                i += 1
            elif j < len(b):
                pb *= b[j]
                rb.append(j)
                j += 1
            else:
                break
            if pa == pb and ra and rb and (i == len(a) or a[i] != 1 or j == len(b)) and \
                    (j == len(b) or b[j] != 1 or i == len(a)):
                break
        runs.append((ra, rb))
    return runs


class ExprEmitter:
    """Evaluates fused expressions at index vectors (lists of index expressions, as strings).
    `loads` maps a value held in memory to what it is read from; everything else is recomputed
    from its producer. Subclasses provide: `sb` (the scalar builder), `S` (its scalar class),
    `load`, and the integer operations `_mul`, `_add`, `idiv`, `irem`, `icmp`, `iand`,
    `iselect`, `clamp`, `to_index`, `index_scalar`."""

    S: type

    def __init__(self, loads: dict[Value, str], stores: dict[Value, str]) -> None:
        self.buffers = loads          # read from memory (never a kernel's own outputs)
        self.outputs = stores
        self.memo: dict[tuple, object] = {}

    # -- index arithmetic (folds literals, so static offsets cost nothing) --
    def imul(self, a: str, k: int) -> str:
        if k == 0 or a == "0":
            return "0"
        if k == 1:
            return a
        if _is_int_literal(a):
            return str(int(a) * k)
        return self._mul(a, k)

    def iadd(self, a: str, b: str) -> str:
        if a == "0":
            return b
        if b == "0":
            return a
        if _is_int_literal(a) and _is_int_literal(b):
            return str(int(a) + int(b))
        return self._add(a, b)

    def linear(self, idx: list[str], shape) -> str:
        off = "0"
        for i, s in zip(idx, strides(shape)):
            off = self.iadd(off, self.imul(i, s))
        return off

    def wrap_index(self, i, n: int) -> str:
        """A gathered index (a scalar), negative counting from the end, clamped into [0, n)."""
        j = self.to_index(i)
        neg = self.icmp("lt", j, "0")
        return self.clamp(self.iselect(neg, self.iadd(j, str(n)), j), n)

    # -- expressions --
    def emit(self, v: Value, idx: list[str]):
        key = (v, tuple(idx))
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        if v in self.buffers:
            r = self.load(v, self.linear(idx, v.shape))
        else:
            r = self._emit_op(v, idx)
        self.memo[key] = r
        return r

    def _emit_op(self, v: Value, idx: list[str]):
        ins = v.producer
        name, p = ins.prim.name, ins.params
        if name == "constant":
            val = p["value"].reshape(-1)[0] if p["value"].size else 0
            return self.sb.literal(val, v.dtype)
        if ins.prim.kind == "elementwise":
            args = [self.emit(x, idx) for x in ins.inputs]
            return ins.prim.scalar(self.sb, *args, **p)
        if ins.prim.kind == "random":
            # a function of scalar operands (seed, offset) and the element's linear index
            args = [self.emit(x, []) for x in ins.inputs]
            flat = self.index_scalar(self.linear(idx, v.shape))
            return ins.prim.scalar(self.sb, *args, flat, **p)
        if name == "iota":            # the element's own position along the axis
            return self.index_scalar(idx[p["axis"]])
        x = ins.inputs[0]
        if name == "broadcast":
            lead = len(v.shape) - len(x.shape)
            return self.emit(x, ["0" if d == 1 else idx[lead + i] for i, d in enumerate(x.shape)])
        if name == "transpose":
            inv = [0] * len(p["perm"])
            for k, q in enumerate(p["perm"]):
                inv[q] = k
            return self.emit(x, [idx[inv[j]] for j in range(len(inv))])
        if name == "slice":
            return self.emit(x, [self.iadd(str(a), self.imul(i, s))
                                 for i, a, s in zip(idx, p["starts"], p["steps"])])
        if name == "reshape":
            return self._reshape(x, v, idx)
        if name == "pad":
            return self._pad(x, v, idx, p)
        if name == "concatenate":
            return self._concat(ins.inputs, v, idx, p["axis"])
        if name == "windows":         # im2col: [.., i, j, oh, ow] reads x[.., oh*s + i*d, ..]
            lead = len(x.shape) - 2
            i, j, oh, ow = idx[lead:]
            (sh, sw), (dh, dw) = p["stride"], p["dilation"]
            return self.emit(x, idx[:lead] + [self.iadd(self.imul(oh, sh), self.imul(i, dh)),
                                              self.iadd(self.imul(ow, sw), self.imul(j, dw))])
        if name == "gather":
            ind, axis = ins.inputs[1], p["axis"]
            k = len(ind.shape)
            j = self.wrap_index(self.emit(ind, idx[axis:axis + k]), x.shape[axis])
            return self.emit(x, idx[:axis] + [j] + idx[axis + k:])
        raise NotImplementedError(f"cannot fuse {name}")

    def _reshape(self, x: Value, v: Value, idx: list[str]):
        xs = [d for d in x.shape if d != 1]
        if xs == [d for d in v.shape if d != 1]:      # only size-1 axes change: no division
            it = iter(i for i, d in zip(idx, v.shape) if d != 1)
            return self.emit(x, ["0" if d == 1 else next(it) for d in x.shape])
        if x in self.buffers:
            return self.load(x, self.linear(idx, v.shape))
        # split both shapes into runs of axes with equal products (merged or split axes) and
        # re-index each run alone: an axis that stays as it is costs no division
        out: list[str] = []
        for vr, xr in _reshape_runs(v.shape, x.shape):
            if len(vr) == 1 and len(xr) == 1:
                out.append(idx[vr[0]])
                continue
            vs, xs = [v.shape[i] for i in vr], [x.shape[i] for i in xr]
            flat = self.linear([idx[i] for i in vr], vs)
            for k, (d, s) in enumerate(zip(xs, strides(xs))):
                q = flat if s == 1 else self.idiv(flat, s)
                out.append("0" if d == 1 else q if k == 0 else self.irem(q, d))
        return self.emit(x, out)

    def _pad(self, x: Value, v: Value, idx: list[str], p):
        ok = None
        src = []
        for i, n, lo, it in zip(idx, x.shape, p["lo"], p["interior"]):
            j = self.iadd(i, str(-lo))
            step = it + 1
            conds = [self.icmp("ge", j, "0")]
            q = j
            if step > 1:
                q = self.idiv(j, step, signed=True)
                conds.append(self.icmp("eq", self.irem(j, step, signed=True), "0"))
            conds.append(self.icmp("lt", q, str(n)))
            for c in conds:
                ok = c if ok is None else self.iand(ok, c)
            src.append(self.clamp(q, n) if n else "0")
        zero = self.sb.literal(0, v.dtype)
        if x.aval.size == 0:
            return zero
        val = self.emit(x, src)
        return self.sb.select(self.S(ok, dt.bool_), val, zero) if ok else val

    def _concat(self, xs, v: Value, idx: list[str], axis: int):
        offs, o = [], 0
        for x in xs:
            offs.append(o)
            o += x.shape[axis]
        result = None
        for x, off in reversed(list(zip(xs, offs))):
            n = x.shape[axis]
            if n == 0:
                continue
            j = self.clamp(self.iadd(idx[axis], str(-off)), n)
            val = self.emit(x, idx[:axis] + [j] + idx[axis + 1:])
            if result is None:
                result = val
            else:
                c = self.S(self.icmp("lt", idx[axis], str(off + n)), dt.bool_)
                result = self.sb.select(c, val, result)
        # every operand empty on the axis: so is the result, and the loop never runs
        return result if result is not None else self.sb.literal(0, v.dtype)
