"""The Jacobians by the transforms of tracer/forward.py: tj.jacfwd (forward mode) and tj.jacrev
(reverse mode). Each traces the function once per signature (forward.cached), runs the part
of the transformed graph that does not depend on the tangents (or cotangents) once, and the
linear part on the whole standard basis at once, as the batched graph that the vmap transform
(ir.batching.batch_graph) makes of it."""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from ..debug import dump
from ..ir.autodiff import split, vjp_graph
from ..ir.batching import BatchAxis, batch_graph
from ..ir.core import Graph, user_location
from ..ir.printer import print_graph
from . import ops
from .forward import Pure, _argnums, _leaf_tensor, _linear_parts, _run, _run_primal, cached
from .pytree import tree_flatten, tree_unflatten
from .stacking import movedim
from .tensor_base import TensorBase as Tensor


def _basis(wrt: list[Tensor]) -> list[Tensor]:
    """The standard basis of the flat wrt leaves, one [n, *leaf.shape] tensor per leaf (n: the
    elements of all of them): row e is the tangent that is 1 at element e, 0 elsewhere."""
    sizes = [int(np.prod(p.shape, dtype=np.int64)) for p in wrt]
    n, off, out = sum(sizes), 0, []
    for p, size in zip(wrt, sizes):
        b = np.zeros((n, size), p.dtype.np)
        b[off:off + size] = np.eye(size, dtype=p.dtype.np)
        off += size
        out.append(ops.as_tensor(b.reshape((n,) + p.shape), const=True, like=p))  # p's device
    return out


def _batched_run(g: Graph, fixed: list[Tensor], batched: list[Tensor],
                 memo: dict | None = None, tag: Any = None) -> list[Tensor]:
    """g (inputs: `fixed`, then one per `batched`) run on every row of the `batched` tensors
    at once: the batching transform (ir.batching, the graph-level tj.vmap) of g, replayed
    (no trace of its own: g is already a graph). Outputs carry the batch axis first. The
    batched graph is kept in `memo` (a cached trace's) under `tag`."""
    n = batched[0].shape[0]
    made = memo.get(("batched", tag)) if memo is not None else None
    if made is None:
        made = batch_graph(g, [False] * len(fixed) + [True] * len(batched),
                           BatchAxis(n, "same"), f"vmap_{g.name}")
        dump("vmap", made[0].name, lambda: print_graph(made[0]))
        if memo is not None:
            memo[("batched", tag)] = made
    bg, out_b = made
    outs = _run(bg, fixed + batched)
    return [o if b else ops.broadcast_to(o, (n,) + tuple(o.shape)) for o, b in zip(outs, out_b)]


def _columns(tangent_g: Graph, residuals: list[Tensor], wrt: list[Tensor],
             memo: dict) -> list[Tensor]:
    """The tangent graph applied to every basis tangent at once: per float output a
    [*out.shape, n] tensor."""
    basis = memo.get("basis")
    if basis is None:
        basis = memo["basis"] = _basis(wrt)
    n = basis[0].shape[0] if basis else 0
    if n == 0:
        like = wrt[0] if wrt else None
        return [ops.as_tensor(np.zeros(tuple(v.shape) + (0,), v.dtype.np), const=True,
                              like=like) for v in tangent_g.outputs]
    return [movedim(c, 0, -1) for c in _batched_run(tangent_g, residuals, basis, memo, "fwd")]


def jacfwd(fn: Callable, argnums: int | Sequence[int] = 0) -> Callable:
    """d fn(*args) / d args[argnums] by forward mode: shape out.shape + arg.shape, the layout of
    tj.jacrev (and JAX's jacfwd). The function is linearized once (its primal part runs once)
    and the linear part runs on the whole standard basis at once, batched by the vmap
    transform (ir.batching)."""
    name = f"jacfwd_{getattr(fn, '__name__', 'f')}"

    @functools.wraps(fn)
    def wrapper(*args):
        call = _prepare("jacfwd", fn, name, args, argnums, _linear_parts, dual=True)
        e = call.entry
        outs, residuals = _run_primal(e.primal_g, e.pure, call.flat_args)
        wrt = [call.flat_args[k] for k in call.wrt]
        columns = iter(_columns(e.tangent_g, residuals, wrt, e.memo))

        def leaf_jacobians(i: int, o: Tensor) -> list[Tensor]:
            col, pos, jacs = next(columns), 0, []     # col: [*o.shape, n]
            for leaf in wrt:
                n = int(np.prod(leaf.shape, dtype=np.int64))
                part = col.narrow(-1, pos, n) if n != col.shape[-1] else col
                pos += n
                jacs.append(ops.reshape(part, o.shape + leaf.shape))
            return jacs
        return _assemble(call, argnums, e.pure.out_tree, outs, leaf_jacobians)
    wrapper.__name__ = name
    return wrapper


class _Call(NamedTuple):
    """One call of a Jacobian transform: what it differentiates and the kept trace."""
    nums: tuple[int, ...]         # the argnums, normalized
    flat_args: list[Tensor]       # every argument's leaves, flat
    wrt: list[int]                # the flat indices to differentiate
    groups: list                  # per argnum: (first flat index, leaves, tree)
    entry: Any                    # the kept trace (forward.cached) and its graphs


def _prepare(kind: str, fn: Callable, name: str, args: tuple, argnums,
             parts: Callable, dual: bool) -> _Call:
    """Check and flatten the arguments of a jacfwd/jacrev call and find (or make) its kept
    trace, whose graphs `parts(pure, wrt, name)` builds."""
    nums = _argnums(argnums, len(args), kind)
    flat_args, wrt, groups = _wrt_groups(args, nums, kind)
    _, in_tree = tree_flatten(tuple(args))
    e = cached(kind, fn, flat_args, in_tree, name, lambda pure: parts(pure, wrt, name),
               (nums,), dual_wrt=wrt if dual else None)
    return _Call(nums, flat_args, wrt, groups, e)


def _assemble(call: _Call, argnums, out_tree, outs: list[Tensor],
              leaf_jacobians: Callable[[int, Tensor], list[Tensor]]) -> Any:
    """The Jacobians in the outputs' structure: for float output number i (None for integer
    and bool outputs) `leaf_jacobians(i, out)`, one [*out.shape, *leaf.shape] per
    differentiated leaf, regrouped into each argument's structure in argnums' order."""
    per_out, fi = [], 0
    for o in outs:
        if not o.dtype.is_float:
            per_out.append(None)
            continue
        jacs = iter(leaf_jacobians(fi, o))
        fi += 1
        blocks = [tree_unflatten(tree, [next(jacs) for _ in leaves])
                  for _, leaves, tree in call.groups]
        per_out.append(_in_argnums_order(blocks, argnums, call.nums))
    return tree_unflatten(out_tree, per_out)


def _in_argnums_order(blocks: list, argnums, nums: tuple[int, ...]) -> Any:
    """One output's Jacobian blocks (made in argument order) as argnums asks: one block for
    an int, else a tuple in argnums' own order (argnums=(1, 0): d/d args[1] first)."""
    if isinstance(argnums, int):
        return blocks[0]
    ordered = sorted(nums)
    return tuple(blocks[ordered.index(a)] for a in nums)


def _wrt_groups(args: tuple, nums: tuple[int, ...], what: str):
    """(flat argument tensors, the flat indices to differentiate, per argnum (first flat index,
    leaves, tree))."""
    groups, flat_args, off = [], [], 0
    for i, a in enumerate(args):
        leaves, tree = tree_flatten(a)
        leaves = [_leaf_tensor(x, what) for x in leaves]
        if i in nums:
            groups.append((off, leaves, tree))
        flat_args += leaves
        off += len(leaves)
    wrt = [k for start, leaves, _ in groups for k in range(start, start + len(leaves))]
    for k in wrt:
        p = flat_args[k]
        if not p.dtype.is_float:
            raise TypeError(f"{what}: differentiated arguments must be floating point, got "
                            f"{p.dtype.name}{list(p.shape)} (at {user_location()})")
    return flat_args, wrt, groups


def jacrev(fn: Callable, argnums: int | Sequence[int] = 0,
           custom: Callable | None = None) -> Callable:
    """d fn(*args) / d args[argnums] by reverse mode, shaped out.shape + arg.shape (JAX's
    jacrev): the reverse-mode transform (ir.autodiff) of the traced function, cut into its
    forward part, which runs once, and its backward part, which runs on the whole standard
    basis of each output's cotangent at once, batched by the vmap transform (ir.batching).
    A function that applies custom Functions runs `custom` instead (the eager engine, which
    calls their backward staticmethods: the IR transform cannot see them)."""
    name = f"jacrev_{getattr(fn, '__name__', 'f')}"

    @functools.wraps(fn)
    def wrapper(*args):
        call = _prepare("jacrev", fn, name, args, argnums, _reverse_parts, dual=False)
        e = call.entry
        pure, memo = e.pure, e.memo
        if pure.custom and custom is not None:
            return custom(*args)
        outs, residuals = _run_primal(e.fwd_g, pure, call.flat_args)
        zeros = memo.get("zeros")
        if zeros is None:
            zeros = memo["zeros"] = [ops.as_tensor(np.zeros(o.shape, o.dtype.np), const=True,
                                                   like=o) for o in outs if o.dtype.is_float]
        wrt = [call.flat_args[k] for k in call.wrt]

        def leaf_jacobians(i: int, o: Tensor) -> list[Tensor]:
            rows = _rows(e.bwd_g, residuals, zeros, i, o, wrt, memo)
            return [ops.reshape(r, o.shape + leaf.shape) for r, leaf in zip(rows, wrt)]
        return _assemble(call, argnums, pure.out_tree, outs, leaf_jacobians)
    wrapper.__name__ = name
    return wrapper


def _reverse_parts(pure: Pure, wrt, name: str) -> dict:
    """The reverse-mode transform of a trace cut into its forward and backward parts."""
    g = pure.graph
    joint = vjp_graph(g, wrt, name)
    dump("grad", name, lambda: print_graph(joint))
    fwd_g, bwd_g, _ = split(joint, len(g.inputs), len(g.outputs))
    return {"fwd_g": fwd_g, "bwd_g": bwd_g}


def _rows(bwd_g: Graph, fixed: list[Tensor], zeros: list[Tensor], i: int, out: Tensor,
          wrt: list[Tensor], memo: dict) -> list[Tensor]:
    """The backward graph (inputs: `fixed` residuals, then one cotangent per float output)
    applied to every basis cotangent of float output i at once (the other cotangents zero):
    per wrt leaf [n, *leaf.shape]. What only depends on the trace is kept in `memo`."""
    n = int(np.prod(out.shape, dtype=np.int64))
    if n == 0:
        return [ops.as_tensor(np.zeros((0,) + p.shape, p.dtype.np), const=True, like=p)
                for p in wrt]
    made = memo.get(("rows", i))
    if made is None:
        basis = ops.as_tensor(np.eye(n, dtype=out.dtype.np).reshape((n,) + out.shape),
                              const=True, like=out)
        # the zero cotangents of the other outputs are inputs that stay unbatched
        g = Graph(bwd_g.name)
        g.instrs, g.outputs = bwd_g.instrs, bwd_g.outputs
        k = len(fixed)
        g.inputs = bwd_g.inputs[:k + i] + bwd_g.inputs[k + i + 1:] + [bwd_g.inputs[k + i]]
        made = memo[("rows", i)] = (basis, g)
    basis, g = made
    return _batched_run(g, fixed + zeros[:i] + zeros[i + 1:], [basis], memo, ("rows", i))


__all__ = ["jacfwd", "jacrev"]
