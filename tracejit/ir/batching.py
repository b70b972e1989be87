"""The batching transform (vmap) on the IR, and the helpers batching rules are written in.

`batch_graph(g, in_batched, axis)` turns a per-example graph into one that runs a whole batch:
every batched value carries the mapped axis first (axis 0, JAX's convention), unbatched values
keep their shape and stay unbatched for as long as nothing batched reaches them (so a weight
matmul'd with a batched activation is read once, not copied per example). Each primitive's
`batch` rule (declared beside it in the registry) maps batched operands to a batched result:

    rule(prim, axis, args, batched, params) -> (out, out_batched)

`args` are the new graph's values (rules apply primitives through `bind`, so the same rule
would run on any world), `batched` says which carry the mapped axis and `axis` is a
`BatchAxis` (the axis size and the randomness mode). A rule only runs when an operand is
batched, except for random numbers, whose rule decides what `randomness=` means.
"""
from __future__ import annotations

from typing import Any, Sequence

from .core import Aval, Graph, Value
from .primitives import P, Primitive, bind, broadcast, reshape, transpose

RANDOMNESS = ("error", "different", "same")


class BatchAxis:
    """The mapped axis of one vmap: its size and what random numbers do under it."""

    __slots__ = ("size", "randomness")

    def __init__(self, size: int, randomness: str = "error") -> None:
        if randomness not in RANDOMNESS:
            raise ValueError(f"vmap: randomness must be one of {', '.join(RANDOMNESS)}, got "
                             f"{randomness!r}")
        self.size = int(size)
        self.randomness = randomness


def batch_error(x: Any, name: str, msg: str, cls: type = ValueError) -> Exception:
    """An error from a batching rule, at the user's line that made the instruction."""
    loc = getattr(getattr(x, "graph", None), "loc_override", None) or "<unknown>:0"
    return cls(f"{name}: {msg} (at {loc})")


# -- helpers ----------------------------------------------------------------------------------
def to_batched(x: Any, ax: BatchAxis) -> Any:
    """An unbatched value as a batched one: broadcast along a new leading axis (no copy in
    generated code: the broadcast fuses into its consumer)."""
    return bind(P.broadcast, x, shape=(ax.size,) + tuple(x.shape))


def all_batched(args: Sequence[Any], batched: Sequence[bool], ax: BatchAxis) -> list[Any]:
    return [a if b else to_batched(a, ax) for a, b in zip(args, batched)]


def moveaxis(x: Any, src: int, dst: int) -> Any:
    n = len(x.shape)
    src, dst = src % n, dst % n
    if src == dst:
        return x
    perm = [i for i in range(n) if i != src]
    perm.insert(dst, src)
    return transpose(x, tuple(perm))


def shifted(axes: Sequence[int]) -> tuple[int, ...]:
    return tuple(a + 1 for a in axes)


# -- generic rules ----------------------------------------------------------------------------
def batch_elementwise(prim: Primitive, ax: BatchAxis, args, batched, params):
    """Elementwise ops: unbatched operands are broadcast along the batch axis."""
    return bind(prim, *all_batched(args, batched, ax), **params), True


def batch_unbatched(prim: Primitive, ax: BatchAxis, args, batched, params):
    """Ops without operands (constants): never batched."""
    return bind(prim, *args, **params), False


def batch_axes_param(key: str):
    """Unary ops whose parameter `key` names operand axes (a tuple or one int): shifted by
    one past the batch axis."""
    def rule(prim: Primitive, ax: BatchAxis, args, batched, params):
        v = params[key]
        new = shifted(v) if isinstance(v, tuple) else v + 1
        return bind(prim, *args, **{**params, key: new}), True
    return rule


def batch_same_params(prim: Primitive, ax: BatchAxis, args, batched, params):
    """Unary ops that act on trailing axes only and take any leading ones (windows)."""
    return bind(prim, *args, **params), True


def batch_prefix(**lead: int):
    """Unary ops whose per-axis tuple parameters gain an entry for the batch axis; `lead`
    maps each parameter to that entry (-1: the batch size)."""
    def rule(prim: Primitive, ax: BatchAxis, args, batched, params):
        new = dict(params)
        for k, v in lead.items():
            new[k] = ((ax.size if v == -1 else v),) + tuple(params[k])
        return bind(prim, *args, **new), True
    return rule


def batch_transpose(prim: Primitive, ax: BatchAxis, args, batched, params):
    return transpose(args[0], (0,) + shifted(params["perm"])), True


def batch_broadcast(prim: Primitive, ax: BatchAxis, args, batched, params):
    x, shape = args[0], tuple(params["shape"])
    lead = len(shape) - (len(x.shape) - 1)
    if lead:                    # NumPy aligns trailing axes: put the new ones after the batch
        x = reshape(x, (ax.size,) + (1,) * lead + tuple(x.shape[1:]))
    return broadcast(x, (ax.size,) + shape), True


def batch_concatenate(prim: Primitive, ax: BatchAxis, args, batched, params):
    return bind(prim, *all_batched(args, batched, ax), axis=params["axis"] + 1), True


def batch_random(prim: Primitive, ax: BatchAxis, args, batched, params):
    """randomness='error' refuses; 'same' draws one set shared by the batch; 'different'
    draws the whole batch from the same stream (each example its own numbers)."""
    if ax.randomness == "error":
        raise batch_error(args[0], prim.name,
                          "random numbers under vmap need a choice: pass randomness='different' "
                          "(each example its own numbers) or 'same' (one set for the batch) to "
                          "tj.vmap", RuntimeError)
    if ax.randomness == "same":
        return bind(prim, *args, **params), False
    return bind(prim, *args, **{**params, "shape": (ax.size,) + tuple(params["shape"])}), True


# -- the transform ----------------------------------------------------------------------------
def batch_graph(g: Graph, in_batched: Sequence[bool], ax: BatchAxis,
                name: str | None = None) -> tuple[Graph, list[bool]]:
    """The batched form of `g`: inputs marked in `in_batched` gain a leading axis of
    `ax.size`; returns the new graph and which of its outputs are batched (axis 0)."""
    new = Graph(name or f"vmap_{g.name}")
    env: dict[Value, tuple[Value, bool]] = {}
    for v, b in zip(g.inputs, in_batched):
        aval = Aval((ax.size,) + v.shape, v.dtype) if b else v.aval
        env[v] = (new.add_input(aval, v.name), bool(b))
    for ins in g.instrs:
        args = [env[v][0] for v in ins.inputs]
        batched = [env[v][1] for v in ins.inputs]
        if not any(batched) and ins.prim.kind != "random":
            env[ins.out] = (new.emit(ins.prim, args, ins.params, ins.loc), False)
            continue
        rule = ins.prim.batch
        if rule is None:
            raise NotImplementedError(f"vmap: primitive {ins.prim.name} has no batching rule "
                                      f"(at {ins.loc})")
        new.loc_override = ins.loc
        try:
            out, out_b = rule(ins.prim, ax, args, batched, ins.params)
        finally:
            new.loc_override = None
        want = ((ax.size,) + ins.out.shape) if out_b else ins.out.shape
        if tuple(out.shape) != want or out.dtype is not ins.out.dtype:
            raise AssertionError(f"tracejit internal error: the batching rule of "
                                 f"{ins.prim.name} gave {out.aval}, expected "
                                 f"{Aval(want, ins.out.dtype)}")
        env[ins.out] = (out, out_b)
    new.outputs = [env[v][0] for v in g.outputs]
    return new, [env[v][1] for v in g.outputs]


__all__ = ["BatchAxis", "RANDOMNESS", "batch_graph", "batch_error", "to_batched",
           "all_batched", "moveaxis", "batch_elementwise", "batch_unbatched",
           "batch_axes_param", "batch_same_params", "batch_prefix", "batch_broadcast",
           "batch_transpose", "batch_concatenate", "batch_random"]
