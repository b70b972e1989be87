"""A graph run on arrays: the interpreter tier of the eager fused composites (fused.py runs a
cold plan's forward, backward and check graphs through it). Each instruction is its
primitive's NumPy (or CuPy) implementation with its params, on slots instead of Values: no
Tensor, node or inference per op."""
from __future__ import annotations

import numpy as np

from ..devices import device_of, is_gpu_array
from ..ir.core import Graph, Value, user_location
from .eager import device_const


class Program:
    """A graph prepared for running on arrays: slots instead of Values, constants made once,
    each step the primitive's implementation with its params."""

    __slots__ = ("steps", "template", "n_in", "outs", "consts", "dev_consts")

    def __init__(self, g: Graph) -> None:
        slot: dict[Value, int] = {v: i for i, v in enumerate(g.inputs)}
        self.n_in = len(g.inputs)
        self.consts: list[tuple[int, np.ndarray]] = []
        self.dev_consts: dict = {}
        steps = []
        for ins in g.instrs:
            k = slot[ins.out] = len(slot)
            want = ins.out.dtype.np
            if ins.prim.name == "constant":
                self.consts.append((k, np.asarray(ins.params["value"], want)))
                continue
            steps.append([ins.prim.impl, tuple(slot[v] for v in ins.inputs), ins.params, k,
                          want, ins.prim.name, ()])
        # each value is dropped after its last reader (not inputs, constants or outputs): a
        # composite's peak memory is its live values, not all of them
        keep = set(range(self.n_in)) | {slot[v] for v in g.outputs} | \
            {k for k, _ in self.consts}
        last: dict[int, int] = {}
        for n, st in enumerate(steps):
            for i in st[1]:
                last[i] = n
        for i, n in last.items():
            if i not in keep:
                steps[n][6] += (i,)
        self.steps = [tuple(st) for st in steps]
        self.template = [None] * len(slot)
        for k, c in self.consts:
            self.template[k] = c
        self.outs = [slot[v] for v in g.outputs]

    def run(self, inputs: list) -> list:
        env = self.template.copy()
        env[:self.n_in] = inputs
        if self.consts and inputs and type(inputs[0]) is not np.ndarray:
            # constants on the inputs' device, made there once (a copy of an array constant,
            # a causal mask, would make the host wait on every call)
            dev = device_of(inputs[0])
            made = self.dev_consts.get(dev)
            if made is None:
                made = self.dev_consts[dev] = [(k, device_const(c, inputs[0]))
                                               for k, c in self.consts]
            for k, c in made:
                env[k] = c
        for impl, ins, params, k, want, name, drop in self.steps:
            try:
                if len(ins) == 1:
                    r = impl(env[ins[0]], **params)
                elif len(ins) == 2:
                    r = impl(env[ins[0]], env[ins[1]], **params)
                else:
                    r = impl(*[env[i] for i in ins], **params)
            except (IndexError, ValueError, TypeError) as e:
                base = next(c for c in (IndexError, ValueError, TypeError) if isinstance(e, c))
                raise base(f"{name}: {e} (at {user_location()})") from e
            if type(r) is not np.ndarray:
                if not is_gpu_array(r):
                    r = np.asarray(r)
            if r.dtype != want:
                r = r.astype(want)
            env[k] = r
            for i in drop:
                env[i] = None
        return [env[i] for i in self.outs]
