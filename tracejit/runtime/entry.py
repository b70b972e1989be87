"""One compiled signature of a compiled function (its trace, graph and executable, and what a
call must check and store besides running it), and what `.lower()` shows of it."""
from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from ..codegen.dot import plan_dot
from .memory_report import residual_report
from ..ir.core import user_location
from ..ir.primitives import P
from ..ir.printer import print_graph
from ..tracer.rng import default_generator
from ..tracer.state import STATE
from ..tracer import checks
from ..tracer.attr_slots import fill_slots
from ..tracer.tensor import Tensor
from ..tracer.trace import Traced
from . import captures
from ..devices import CPU, Device, is_gpu_array


def output_sources(graph) -> dict[int, int]:
    """For each floating-point output of a graph as traced, a bit mask of the inputs it is
    computed from through ops a gradient passes (not stop_gradient, nor a value traced as
    gradless). Entry.active reads these: the passes may cut such a path where torch's result
    still requires grad (they fold a size-0 op into a constant, or `zero_()` of a tensor with
    history into zeros), and torch's requires_grad follows the program as written."""
    ins, outs = graph.inputs, graph.outputs
    bits = {id(v): 1 << i for i, v in enumerate(ins) if v.dtype.is_float}
    if not bits:
        return {}
    gradless = graph.gradless
    stop = P.stop_gradient
    get = bits.get
    for instr in graph.instrs:
        out = instr.out
        if out.dtype.is_float and instr.prim is not stop:
            m = 0
            for v in instr.inputs:
                m |= get(id(v), 0)
            if m and out not in gradless:
                bits[id(out)] = m
    found = {}
    for k, v in enumerate(outs):
        m = get(id(v), 0) if v.dtype.is_float else 0
        if m:
            found[k] = m
    return found


class TracedSources:
    """The standard passes, recording output_sources of the graph as traced (a gradient
    shell's joint graph once built) just before they rewrite it."""

    def __init__(self, passes) -> None:
        self.passes = passes
        self.found: dict[int, int] | None = None

    def __call__(self, graph):
        self.found = output_sources(graph)
        return self.passes(graph)


class Entry:
    """One compiled signature."""

    def __init__(self, traced: Traced, graph, exe, compile_s: float, device: Device = CPU,
                 passes=None, sources: TracedSources | None = None) -> None:
        self.traced = traced
        # outputs -> the inputs they are computed from as traced, before the passes could
        # fold a path away (see output_sources), found when the passes run
        self.sources = sources
        self.device = device
        # the graph, possibly before its standard passes (`passes`, a backend.PendingPasses:
        # a disk-cache hit runs without them); optimized_graph() runs them in place
        self.graph = graph
        self.passes = passes
        self.exe = exe
        self.captures = traced.captures
        self.writes = traced.writes             # captures updated in place, then `.grad`s
        self.n_user = len(graph.outputs) - traced.n_extra     # set: outputs after the user's
        self.extra = bool(traced.n_extra or traced.grad_sets)
        # a step that ran backward() inside gives plain results (its gradients are in .grad)
        self.differentiable = not traced.backward_ran
        # tensors made by the trace were stored outside it: run once, then trace again
        self.once = bool(traced.escapes)
        ids = {id(c) for c in self.captures}
        self.watched = self.captures + [w for w in self.writes if id(w) not in ids]
        self.cap_sig = captures.signature(self.watched, traced.backward_ran)
        self.plain = not (self.watched or traced.guards or traced.grad_guards or
                          traced.attr_guards or traced.consts)     # nothing to check per call
        self.in_avals = graph.in_avals
        self.grad_cache: dict[tuple, tuple] = {}
        self.grad_active: dict[tuple, list] = {}   # wrt -> which outputs depend on them
        self.grad_lock = threading.Lock()
        self.compile_s = compile_s
        self.single_out = traced.out_tree == ("leaf",)
        self.has_scalars = any(v.ndim == 0 for v in graph.inputs)
        self.n_random = traced.n_random          # random ops: the graph's last two inputs
        self.n_hidden = 2 if self.n_random else 0  # are the generator's seed and offset
        # store_writes copies the captures' and arguments' new values into their storage at
        # once, so the executable may keep those outputs in memory it reuses
        n = self.n_user + len(self.writes)
        e = n + traced.n_grad_outs + len(traced.escapes) + len(traced.slots)
        exe.reuse_outputs(list(range(self.n_user, n)) +
                          list(range(e, e + len(traced.arg_writes))))
        # the captures are the graph's inputs after the arguments (then the hidden ones)
        first = len(graph.inputs) - len(self.captures) - self.n_hidden
        where = {id(c): first + i for i, c in enumerate(self.captures)}
        exe.write_back([(self.n_user + k, where[id(w)]) for k, w in enumerate(self.writes)
                        if id(w) in where])

    def active(self, wrt: tuple) -> list[bool]:
        """For each graph output: whether it depends on an input in `wrt` through ops a
        gradient passes (not stop_gradient: detach, or an op traced under no_grad), in the
        program as traced (torch's requires_grad rule), even where the passes folded that
        path away."""
        found = self.grad_active.get(wrt)
        if found is None:
            graph = self.optimized_graph()
            sources = None if self.sources is None else self.sources.found
            if sources is not None:
                mask = sum(1 << i for i in wrt)
                found = [bool(sources.get(k, 0) & mask) for k in range(len(graph.outputs))]
            else:
                active = {graph.inputs[i] for i in wrt}
                for ins in graph.instrs:
                    if ins.out.dtype.is_float and ins.prim is not P.stop_gradient and \
                            any(v in active for v in ins.inputs):
                        active.add(ins.out)
                found = [v in active for v in graph.outputs]
            self.grad_active[wrt] = found
        return found

    def _refuse_lost_history(self) -> None:
        """A function that runs backward() inside gives plain results: a capture it writes
        with a value that requires grad (a gradient path to a captured tensor that requires
        grad) would lose that history, which torch keeps; refused before anything is stored."""
        first = len(self.graph.inputs) - len(self.captures) - self.n_hidden
        wrt = tuple(first + i for i, c in enumerate(self.captures) if c._requires_grad)
        if not wrt:
            return
        active = self.active(wrt)
        for k, (t, hist) in enumerate(zip(self.writes, self.traced.write_history)):
            if hist and active[self.n_user + k]:
                raise RuntimeError(
                    f"a compiled function that runs backward() inside wrote a value that "
                    f"requires grad into the captured tensor {t.dtype.name}{list(t.shape)} "
                    f"(at {user_location()}): its results carry no autograd history, so that "
                    f"tensor would silently lose its gradient path; write it under "
                    f"`with tj.no_grad():` or write a detach()ed value")

    def recorded_outputs(self) -> list[int]:
        """The graph outputs whose history a call with grad on hands to the caller: the
        user's, the captures written by ops that record (captures.store_writes), the tensors
        that escaped the trace or fill module attributes, and the arguments updated in
        place."""
        traced = self.traced
        n = self.n_user + len(self.writes)
        e = n + traced.n_grad_outs
        return list(range(self.n_user)) + \
            [self.n_user + k for k, hist in enumerate(traced.write_history) if hist] + \
            list(range(e, e + len(traced.escapes) + len(traced.slots) + len(traced.arg_writes)))

    def optimized_graph(self):
        """The graph after the standard passes (run now if they were left pending): what
        gradients are built from and `.lower()` shows. Its inputs and outputs are the same
        before and after."""
        if self.passes is not None:
            self.passes()
        return self.graph

    def hidden_inputs(self) -> list[np.ndarray]:
        """This call's seed and offset, advancing the device's generator past them."""
        if not self.n_random:
            return []
        return default_generator(self.device).hidden_inputs(self.n_random)

    def fast_ok(self) -> bool:
        """Captures unchanged and none of them needs a gradient now."""
        return self.stale_capture() is None and not (
            self.differentiable and STATE.grad_enabled and
            any(c._requires_grad for c in self.captures))

    def stale_capture(self) -> str | None:
        if self.plain:
            return None
        return (captures.changed(self.watched, self.cap_sig) if self.watched else None) or \
            self.traced.stale()

    def store_writes(self, outs: list, flat: Sequence[Any] = ()) -> list:
        """Store the in-place updates of captures and of the arguments `flat` (the call's
        flat arguments) and set the `.grad`s the call changed (the outputs after the user's);
        return the user's outputs."""
        traced = self.traced
        if traced.checks:           # before anything is stored, as the eager op raises first
            code, outs = outs[-1], outs[:-1]
            code = code._data if isinstance(code, Tensor) else code
            err = checks.failure(traced.checks, code.get() if is_gpu_array(code) else code)
            if err is not None:
                raise err
        targets = [flat[k] for k in traced.arg_writes]
        captures.check_arguments(targets)
        # (a call that records: its writes take their history, see captures.store_writes)
        history = traced.write_history if self.differentiable and \
            (STATE.grad_enabled or traced.outer_off) and any(traced.write_history) else None
        if history is not None:
            captures.check_history_writes(self.writes, history)
        elif not self.differentiable and STATE.grad_enabled and any(traced.write_history):
            self._refuse_lost_history()
        n = self.n_user + len(self.writes)
        captures.store_writes(self.writes, outs[self.n_user:n], traced.write_counts, history)
        m = n + traced.n_grad_outs
        if traced.grad_sets:
            captures.set_grads(traced.grad_sets, outs[n:m])
        e = m + len(traced.escapes)
        if traced.escapes:
            captures.settle_escapes(traced.escapes, outs[m:e])
        if traced.slots:
            fill_slots(traced.slots, outs[e:e + len(traced.slots)])
            e += len(traced.slots)
        if targets:
            captures.store_arguments(targets, outs[e:e + len(targets)])
        return outs[:self.n_user]


class Lowered:
    """What `.lower(*args)` returns: the graph and every stage the backend can show."""

    def __init__(self, entry: Entry) -> None:
        self._entry = entry
        self.graph = entry.optimized_graph()
        self.compile_time_s = entry.compile_s

    def as_text(self) -> str:
        return print_graph(self.graph)

    def __str__(self) -> str:
        return self.as_text()

    kernels = property(lambda self: self._entry.exe.stage_text("kernels"))
    # the CPU's LLVM program: slots, steps, kernel calls and the distinct kernel modules
    program = property(lambda self: self._entry.exe.stage_text("program"))
    llvm_ir = property(lambda self: self._entry.exe.stage_text("llvm"))
    asm = property(lambda self: self._entry.exe.stage_text("asm"))
    cuda_source = property(lambda self: self._entry.exe.stage_text("cuda"))
    # the loop IR of every generated kernel (codegen.loops), for the backend's target
    loops = property(lambda self: self._entry.exe.stage_text("loops"))

    @property
    def memory(self) -> str:
        """The executable's memory plan (the intermediates' peak bytes in the shared scratch
        arena, each buffer's offset and life) and the residuals a call with gradients saves
        for its backward: which, how many bytes, and which backward operations read them."""
        entry = self._entry
        parts = [entry.exe.stage_text("memory")]
        if not entry.differentiable:
            parts.append("saved for backward: nothing (the function runs its backward inside)")
        else:
            done = list(entry.grad_cache)       # the gradients calls have asked for so far
            for wrt in done or [None]:
                parts.append(residual_report(entry.graph, wrt))
        return "\n".join(parts)

    def dot(self) -> str:
        """The fusion plan as Graphviz DOT text: each kernel a cluster of its ops; inputs,
        outputs, materialized buffers and extern calls marked (render: `dot -Tsvg`)."""
        exe = self._entry.exe
        if exe.plan is None:
            raise NotImplementedError(f"the {exe.backend} backend has no kernel plan to draw: "
                                      f"it comes from the LLVM backend (the default) or "
                                      f"device='cuda'")
        return plan_dot(exe.plan, "cuda" if exe.backend == "cuda" else "llvm")
