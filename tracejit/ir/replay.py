"""Running a graph by binding each instruction: how a graph is inlined into another trace or
into the eager tape."""
from __future__ import annotations

from typing import Any, Iterable

from .core import Graph, Value
from .primitives import bind, const_like


def replay(graph: Graph, args: Iterable[Any], bind_fn=None) -> list[Any]:
    """Run `graph` by binding each instruction on `args` (Tensors, Values, arrays).

    This is how a graph is inlined into another trace or into the eager tape.
    """
    env: dict[Value, Any] = dict(zip(graph.inputs, args))
    like = next(iter(env.values()), None)
    for ins in graph.instrs:
        if ins.prim.name == "constant":
            if like is None:
                env[ins.out] = ins.params["value"]
            else:
                env[ins.out] = const_like(like, ins.params["value"])
            continue
        env[ins.out] = (bind_fn or bind)(ins.prim, *[env[v] for v in ins.inputs], **ins.params)
    return [env[v] for v in graph.outputs]
