"""How a fused loop kernel's buffer reads move along its innermost axis.

The CPU schedule asks LLVM to vectorize a short innermost loop only when every read of the
kernel moves by 0 or 1 element per step of that axis (codegen.schedule): then the widened loop
loads contiguously or broadcasts, where a transposed read would become a gather. The probe
evaluates the kernel's index arithmetic (the registry's index maps, via ExprEmitter) at two
neighbouring index vectors with literal integers, and compares the flat offsets it loads."""
from __future__ import annotations

from ..ir import dtypes as dt
from ..ir.core import Value
from .expr import ExprEmitter, Scalar
from .fusion import Kernel


class _Unknown(Exception):
    """The offsets depend on a loaded value (a gather): not known without running."""


class _Sym(Scalar):
    TYPES: dict[str, str] = {}


class _Builder:
    """The few scalar operations index maps ask for (Zero, Select); values are opaque."""

    def literal(self, value, dtype: dt.DType) -> _Sym:
        return _Sym("c", dtype)

    def select(self, cond, a: _Sym, b: _Sym) -> _Sym:
        return a


class _Probe(ExprEmitter):
    """ExprEmitter over literal indices: records (value, flat offset) of every load."""

    S = _Sym

    def __init__(self, inputs: list[Value]) -> None:
        super().__init__({v: "" for v in inputs}, {})
        self.sb = _Builder()
        self.reads: list[tuple[Value, int]] = []

    def _mul(self, a: str, k: int) -> str:
        raise _Unknown(a)            # ExprEmitter folds literals; a non-literal is a gather

    def _add(self, a: str, b: str) -> str:
        raise _Unknown(a)

    def idiv(self, a: str, k: int, signed: bool = False) -> str:
        q = abs(int(a)) // k
        return str(q if int(a) >= 0 else -q)

    def irem(self, a: str, k: int, signed: bool = False) -> str:
        return str(int(a) - int(self.idiv(a, k)) * k)

    def icmp(self, op: str, a: str, b: str) -> str:
        x, y = int(a), int(b)
        r = {"lt": x < y, "le": x <= y, "gt": x > y, "ge": x >= y, "eq": x == y,
             "ne": x != y}[op]
        return "1" if r else "0"

    def iand(self, a: str, b: str) -> str:
        return "1" if a == "1" and b == "1" else "0"

    def iselect(self, c: str, a: str, b: str) -> str:
        return a if c == "1" else b

    def clamp(self, i: str, n: int) -> str:
        return str(min(max(int(i), 0), max(n - 1, 0)))

    def to_index(self, s) -> str:
        raise _Unknown("gathered index")

    def index_scalar(self, i: str) -> _Sym:
        return _Sym(i, dt.i64)

    def load(self, v: Value, flat: str) -> _Sym:
        self.reads.append((v, int(flat)))
        return _Sym("x", v.dtype)

    def _emit_op(self, v: Value, idx: list[str]):
        ins = v.producer
        if ins.prim.kind == "elementwise":
            for x in ins.inputs:
                self.emit(x, idx)
            return _Sym("x", v.dtype)
        if ins.prim.name == "constant":
            return _Sym("c", v.dtype)
        if ins.prim.kind == "random":
            raise _Unknown("random")
        return super()._emit_op(v, idx)


def _reads(k: Kernel, idx: list[int]) -> list[tuple[Value, int]]:
    p = _Probe(list(k.inputs))
    for v in k.outputs:
        p.emit(v, [str(i) for i in idx])
    return p.reads


def innermost_steps(k: Kernel) -> list[int] | None:
    """For a loop kernel: how far (in elements) each buffer read moves when the innermost
    index grows by one, in load order; None where that is not a fixed pattern (a gather, a
    random draw, a pad or concatenate choosing another operand at the probed point)."""
    shape = k.shape
    if not shape or shape[-1] < 2:
        return None
    at = [s // 2 for s in shape]
    at[-1] = min(at[-1], shape[-1] - 2)
    nxt = at[:-1] + [at[-1] + 1]
    try:
        a, b = _reads(k, at), _reads(k, nxt)
    except Exception:      # noqa: BLE001  an index map the probe cannot follow only costs
        return None        # the kernel its vector hint, never its compilation
    if len(a) != len(b) or any(x[0] is not y[0] for x, y in zip(a, b)):
        return None
    return [y[1] - x[1] for x, y in zip(a, b)]


__all__ = ["innermost_steps"]
