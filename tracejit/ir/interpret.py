"""The NumPy reference interpreter: runs any Graph, instruction by instruction."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .core import Graph, Value


def interpret(g: Graph, args: Sequence[np.ndarray]) -> list[np.ndarray]:
    if len(args) != len(g.inputs):
        raise TypeError(f"graph @{g.name} takes {len(g.inputs)} inputs, got {len(args)}")
    env: dict[Value, np.ndarray] = {}
    for v, a in zip(g.inputs, args):
        a = np.asarray(a)
        if a.shape != v.shape or a.dtype != v.dtype.np:
            raise TypeError(f"graph @{g.name}: input {v} got {a.dtype}{list(a.shape)}")
        env[v] = a
    with np.errstate(all="ignore"):
        for ins in g.instrs:
            out = ins.prim.impl(*[env[v] for v in ins.inputs], **ins.params)
            env[ins.out] = np.asarray(out, dtype=ins.out.dtype.np)
    return [env[v] for v in g.outputs]
