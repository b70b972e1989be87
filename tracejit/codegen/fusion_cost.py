"""The fusion cost model: whether a value that several kernels read is recomputed inside each
of them (fusion's default: no memory traffic for it) or materialized once.

Fusion inlines a value's whole expression into every kernel that reads it. That is free for a
cheap expression of few inputs, and ruinous for a long one: a transformer's residual stream is
the sum of the embeddings and every earlier layer's output, and inlined into each layer norm
and each layer-norm weight/bias gradient reduction it re-reads all of them per element.

The model counts bytes and flops per element. For a value v of W bytes whose expression reads
R bytes of buffers (each input counted once, at most v's size: a gather or broadcast reads no
more than it produces) and costs F flops per element, read by n kernels r:

    recompute   = sum over r of (R_r + F * size * FLOP_BYTES)
    materialize = (R + F * size * FLOP_BYTES) + W + n * W

where the readers r are kernels (loops of one shape count once: fusion merges them into one
kernel that evaluates v once, and loops of v's own shape merge with v's kernel when v is an
output), R_r counts only the inputs of v that kernel r does not read anyway (the kernels reading
a relu's mask also read its pre-activation: recomputing the mask costs them no bytes), and v
becomes a buffer when materializing is cheaper. A graph output is written anyway, so for it
materialize = n * W. Values are decided consumers first, so a value's
consumer count is the number of kernels that really read it after the values below it were
decided. Small values (fewer than MIN_ELEMENTS) are left to fusion: they live in cache."""
from __future__ import annotations

from typing import Callable

from ..ir.core import Graph, Instr, Value

FLOP_BYTES = 0.25          # memory bytes one arithmetic op per element is worth (CPU and GPU
                           # both do several flops in the time one byte arrives from memory)
TRANSCENDENTAL_FLOPS = 16  # exp, log, tanh, erf ...: a polynomial and range reduction
MIN_ELEMENTS = 4096
FREE = frozenset({"broadcast", "reshape", "transpose", "slice", "pad", "concatenate",
                  "constant", "stop_gradient", "iota"})


def _expr(v: Value, buffers: set[Value]) -> tuple[list[Instr], list[Value]]:
    """The instructions of v's inline expression and the buffers it reads."""
    ops, leaves, seen, stack = [], [], set(), [v]
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        if x is not v and (x in buffers or x.producer is None):
            leaves.append(x)
            continue
        if x.producer is None:
            continue
        ops.append(x.producer)
        stack.extend(x.producer.inputs)
    return ops, leaves


def _readers(v: Value, hard: set[Value], outputs: set[Value],
             uses: dict[Value, list[Instr]]) -> list[Value]:
    """The kernels that evaluate v, by the buffer each writes: the buffers downstream of v
    that fusion reaches from it without crossing another buffer."""
    roots, seen, stack = [], {v}, [v]
    while stack:
        x = stack.pop()
        for ins in uses.get(x, ()):
            out = ins.out
            if out in seen:
                continue
            seen.add(out)
            if out in hard:
                roots.append(out)
                continue
            if out in outputs:
                roots.append(out)        # written by a loop, and later kernels fuse through it
            stack.append(out)
    return roots


def _reader_kernels(readers: list[Value], fusible: Callable[[Instr], bool]) -> dict:
    """Readers grouped by the kernel that will evaluate v for them: loops of one shape merge
    into one kernel (which evaluates v once for all its outputs); any other kernel is its own."""
    groups: dict = {}
    for r in readers:
        p = r.producer
        key = ("loop", r.shape) if p is not None and fusible(p) else ("kernel", id(r))
        groups.setdefault(key, []).append(r)
    return groups


def _flops(ops: list[Instr], transcendental: frozenset[str]) -> int:
    """Flops per element of an expression (view ops are free, transcendentals expensive)."""
    return sum(TRANSCENDENTAL_FLOPS if op.prim.name in transcendental else
               (0 if op.prim.name in FREE else 1) for op in ops)


def expression_cost(v: Value, buffers: set[Value],
                    transcendental: frozenset[str]) -> tuple[float, float]:
    """(bytes read, flops) of evaluating v's expression over all of v's elements."""
    ops, leaves = _expr(v, buffers)
    size = v.aval.size
    read = sum(min(u.aval.size, size) * u.dtype.np.itemsize for u in leaves)
    return float(read), float(_flops(ops, transcendental) * size)


def _recompute(v: Value, groups: dict, leaf_bytes: dict[Value, int], flops: float,
               hard: set[Value]) -> float:
    """What recomputing v costs its reader kernels `groups`: the flops, and only the inputs of v
    a kernel does not read anyway (a relu mask's readers read the pre-activation themselves:
    recomputing the mask costs them no bytes)."""
    hard.add(v)
    recompute = 0.0
    for members in groups.values():
        own = {u for r in members for u in _expr(r, hard)[1]}
        recompute += sum(b for u, b in leaf_bytes.items() if u not in own) + flops
    hard.discard(v)
    return recompute


def materialize_by_cost(g: Graph, hard: set[Value], uses: dict[Value, list[Instr]],
                        fusible: Callable[[Instr], bool],
                        transcendental: frozenset[str]) -> list[Value]:
    """Values (in graph order) the cost model makes buffers; adds them to `hard`."""
    outputs = set(g.outputs)
    chosen = []
    for ins in reversed(g.instrs):
        v = ins.out
        if v in hard or not fusible(ins) or v.aval.size < MIN_ELEMENTS or \
                ins.prim.kind == "constant":
            continue
        groups = _reader_kernels(_readers(v, hard, outputs, uses), fusible)
        if v in outputs:                 # loops of v's shape merge with the loop writing v
            groups.pop(("loop", v.shape), None)
        n = len(groups)
        if n == 0 or (n == 1 and v not in outputs):
            continue
        ops, leaves = _expr(v, hard)
        size = v.aval.size
        leaf_bytes = {u: min(u.aval.size, size) * u.dtype.np.itemsize for u in leaves}
        flops = _flops(ops, transcendental) * size * FLOP_BYTES
        once = sum(leaf_bytes.values()) + flops
        w = float(size * v.dtype.np.itemsize)
        # an output is written anyway: its readers then read w bytes each instead
        cost = n * w if v in outputs else once + w + n * w
        # recomputing costs each reader kernel the flops and at most every input of v: when
        # those bounds decide, the readers' own inputs need not be found (walking their
        # expressions for every value was quadratic in a deep model). Every term is a whole
        # number of bytes or of quarter bytes, so the sums and bounds are exact.
        if cost < n * flops:            # below the least recomputing can cost
            cheaper = True
        elif cost >= n * once:          # at least the most it can cost
            cheaper = False
        else:
            cheaper = cost < _recompute(v, groups, leaf_bytes, flops, hard)
        if cheaper:
            hard.add(v)
            chosen.append(v)
    return chosen[::-1]
