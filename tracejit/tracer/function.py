"""User-defined autograd: custom Function, checkpointing, and gradcheck."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import user_location
from ..devices import to_device
from . import forward_ad
from .autograd import grad as autograd_grad
from .backward_nodes import Node, SavedTensor
from .forward_ad import FWD
from .pytree import tree_flatten, tree_unflatten
from .grad_handles import handle
from .state import (STATE, enable_grad, internal_no_grad, no_grad, note_reads, recording_reads,
                    substituting)
from .rng import all_states, replaying, trace_rng_position
from .tensor_base import TensorBase as Tensor


class FunctionCtx:
    def __init__(self) -> None:
        self._saved: list[SavedTensor | None] = []
        self.needs_input_grad: tuple[bool, ...] = ()
        self.materialize_grads = True
        self._node: Node | None = None
        self._saved_fwd: tuple = ()
        self._in_jvp = False

    def save_for_backward(self, *tensors) -> None:
        self._saved = [SavedTensor(t) if isinstance(t, Tensor) else t for t in tensors]

    def save_for_forward(self, *tensors) -> None:
        """Tensors the jvp staticmethod reads as ctx.saved_tensors (PyTorch's contract)."""
        self._saved_fwd = tensors

    @property
    def saved_tensors(self) -> tuple:
        if self._in_jvp:
            return tuple(self._saved_fwd)
        if self._saved is None:
            raise RuntimeError(Node._freed_msg)
        return tuple(s.unpack(self._node) if isinstance(s, SavedTensor) else s
                     for s in self._saved)

    def set_materialize_grads(self, value: bool) -> None:
        self.materialize_grads = value

    def mark_non_differentiable(self, *tensors) -> None:
        self._non_diff = {id(t) for t in tensors}


class FunctionNode(Node):
    def __init__(self, cls, ctx: FunctionCtx, args, outputs: list[Tensor]) -> None:
        super().__init__(args)
        self.cls, self.ctx = cls, ctx
        self.n_outputs = len(outputs)
        self.n_args = len(args)
        self.out_meta = [(o.shape, o.dtype, o.device) for o in outputs]
        self.in_meta = [(a.shape, a.dtype) if isinstance(a, Tensor) else None for a in args]
        ctx._node = self

    def name(self) -> str:
        return f"{self.cls.__name__}Backward"

    def apply(self, grads, create_graph):
        if self.ctx.materialize_grads:
            grads = [g if g is not None else Tensor(to_device(np.zeros(s, d.np), dev))
                     for g, (s, d, dev) in zip(grads, self.out_meta)]
        res = self.cls.backward(self.ctx, *grads)
        res = res if isinstance(res, tuple) else (res,)
        if len(res) != self.n_args:
            raise RuntimeError(f"function {self.name()} returned an incorrect number of gradients "
                               f"(expected {self.n_args}, got {len(res)})")
        out = []
        for i, (g, meta, (nxt, _)) in enumerate(zip(res, self.in_meta, self.next_functions)):
            if g is None or nxt is None:
                out.append(None)
                continue
            if not isinstance(g, Tensor):
                g = Tensor(np.asarray(g, dtype=meta[1].np))
            if g.shape != tuple(meta[0]):
                raise RuntimeError(f"function {self.name()} returned an invalid gradient at index "
                                   f"{i} - got {list(g.shape)} but expected shape compatible "
                                   f"with {list(meta[0])}")
            out.append(g)
        return out

    def release(self) -> None:
        super().release()
        self.ctx._saved = None


# custom Functions applied while tracing, so far: a forward-mode transform that finds this
# moved while it traced a function traces it again on dual tensors, so that their jvp
# staticmethods take part (tracer/forward.py, runtime/forward.py)
TRACED_APPLIES = [0]
_NO_JVP = ("You must implement the jvp function for custom autograd.Function to use it with "
           "forward mode AD.")


class Function:
    """Subclass with static `forward(ctx, *args)` and `backward(ctx, *grads)`; call `.apply`.
    As in PyTorch, forward may instead be `forward(*args)` with a `setup_context(ctx, inputs,
    output)` staticmethod, and a `jvp(ctx, *tangents)` staticmethod gives forward mode (dual
    tensors, tj.jvp & co.) the outputs' tangents (it reads what `ctx.save_for_forward` kept);
    without one, forward mode through the Function is an error, as in PyTorch."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def setup_context(ctx, inputs, output):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError

    @staticmethod
    def jvp(ctx, *tangents):
        raise NotImplementedError(_NO_JVP)

    @classmethod
    def apply(cls, *args):
        ctx = FunctionCtx()
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a._requires_grad for a in args)
        note_reads([a for a in args if isinstance(a, Tensor)])      # (for a checkpoint)
        levels = forward_ad.tangent_levels(args) if FWD.levels else []
        has_jvp = cls.jvp is not Function.jvp
        if levels and not has_jvp:
            raise NotImplementedError(f"{_NO_JVP} ({cls.__name__}, at {user_location()})")
        if STATE.traces:                # tj.jvp & co. of the trace use the jvp (forward.py)
            TRACED_APPLIES[0] += 1
        with no_grad(), forward_ad.hidden():    # forward's own ops carry no tangents
            if cls.setup_context is not Function.setup_context:
                outs = cls.forward(*args)
                cls.setup_context(ctx, args, outs)
            else:
                outs = cls.forward(ctx, *args)
        single = not isinstance(outs, tuple)
        outs_t = [outs] if single else list(outs)
        if STATE.grad_enabled and any(ctx.needs_input_grad):
            non_diff = getattr(ctx, "_non_diff", set())
            wrapped = []
            for o in outs_t:
                if isinstance(o, Tensor):
                    o2 = Tensor(o._data)
                    o2._version = o._version
                    wrapped.append(o2)
                else:
                    wrapped.append(o)
            tensors = [o for o in wrapped if isinstance(o, Tensor)]
            node = FunctionNode(cls, ctx, args, tensors)
            for i, (o, orig) in enumerate(zip(tensors, [o for o in outs_t if isinstance(o, Tensor)])):
                if id(orig) not in non_diff and o.dtype.is_float:
                    o.grad_fn, o._out_idx, o._requires_grad = node, i, True
            outs_t = wrapped
        if levels:
            skip = {id(o) for o, orig in zip(outs_t, outs if not single else [outs])
                    if isinstance(o, Tensor) and (id(orig) in getattr(ctx, "_non_diff", ())
                                                  or not o.dtype.is_float)}
            ctx._in_jvp = True
            try:
                forward_ad.custom_tangents(cls.__name__, cls.jvp, ctx, args, outs_t, levels,
                                           skip)
            finally:
                ctx._in_jvp = False
        return outs_t[0] if single else tuple(outs_t)


class CheckpointNode(Node):
    """Backward of `checkpoint(fn, *args)`: runs fn again with gradients, then differentiates
    with respect to every tensor needing grad that fn read: its arguments and what it reads
    from its closure (parameters), found while the forward ran. One output per differentiable
    tensor fn returned: `positions` are their places among its flattened results."""

    def __init__(self, fn, args, kwargs, reads: list[Tensor], positions: list[int]) -> None:
        super().__init__(reads)
        self.fn, self.kwargs = fn, kwargs
        self.args = args
        self.saved = [SavedTensor(t) for t in reads]
        self.positions = positions
        self.n_outputs = len(positions)
        # made while an enclosing checkpoint recomputed: its stand-ins must apply again
        self.outer_subst = STATE.subst

    def name(self) -> str:
        return "CheckpointFunctionBackward"

    def apply(self, grads, create_graph):
        reads = [s.unpack(self) for s in self.saved]
        if create_graph:    # handles onto the originals: differentiable through their history,
            inner = [handle(t) for t in reads]      # without running their hooks twice
        else:                           # fresh leaves stop the recomputed graph at fn's inputs
            inner = [Tensor(t._data, requires_grad=True) for t in reads]
        stand_ins = {id(t): s for t, s in zip(reads, inner)}
        args = [stand_ins.get(id(a), a) if isinstance(a, Tensor) else a for a in self.args]
        if self.outer_subst:          # original -> the enclosing stand-in -> ours
            stand_ins = {**{k: stand_ins.get(id(v), v) for k, v in self.outer_subst.items()},
                         **stand_ins}
        with enable_grad(), substituting(stand_ins), \
                replaying(getattr(self, "rng_states", None), getattr(self, "rng_trace", None)):
            out = self.fn(*args, **self.kwargs)
        leaves = tree_flatten(out, _output_leaf)[0]
        outs, cots = [], []
        for pos, g in zip(self.positions, grads):
            o = leaves[pos] if pos < len(leaves) else None
            if not isinstance(o, Tensor):
                raise RuntimeError(f"checkpoint: the recomputation of {_name(self.fn)} returned "
                                   f"{type(o).__name__} where the forward returned a tensor "
                                   f"(output {pos}); fn must return the same structure")
            if g is not None and o._requires_grad:
                outs.append(o)
                cots.append(g)
        if not outs:
            return [None] * len(inner)
        return list(autograd_grad(outs, inner, cots, create_graph=create_graph,
                                  allow_unused=True))

    def release(self) -> None:
        super().release()
        self.args = self.saved = self.outer_subst = None
        self.rng_trace = None


def _name(fn) -> str:
    return getattr(fn, "__qualname__", type(fn).__name__)


def _output_leaf(x) -> bool:
    """What checkpoint's output walk does not open: anything but plain tuples, lists, named
    tuples and dicts (a dict subclass such as HF's ModelOutput stays whole, its tensors
    untracked)."""
    return not (type(x) in (tuple, list, dict) or
                isinstance(x, tuple) and hasattr(x, "_fields"))


def checkpoint(fn: Callable, *args, use_reentrant: bool | None = None, **kwargs):
    """Run fn without keeping its activations; backward recomputes them. Gradients flow to
    fn's arguments and to the tensors it reads from its closure, as in PyTorch. fn may return
    a tensor or tuples/lists/dicts of tensors and other values (as torch's use_reentrant=False):
    each floating-point tensor it makes requires grad; integer and bool tensors, tensors it
    was given or read, and other values come back as they are."""
    rng_states = all_states()           # the recomputation draws the same random numbers
    rng_trace = trace_rng_position()    # (inside a trace: from the same random streams)
    with internal_no_grad(), recording_reads() as rec:
        out = fn(*args, **kwargs)
    reads = list({id(t): t for t in rec.tensors}.values())
    if not STATE.grad_enabled or not reads:
        return out
    leaves, tree = tree_flatten(out, _output_leaf)
    given = {id(t) for t in reads} | {id(a) for a in args} | {id(v) for v in kwargs.values()}
    positions = [i for i, o in enumerate(leaves) if isinstance(o, Tensor) and
                 o.dtype.is_float and id(o) not in given]
    if not positions:
        return out
    node = CheckpointNode(fn, args, kwargs, reads, positions)
    node.rng_states = rng_states
    node.rng_trace = rng_trace
    for k, i in enumerate(positions):
        o = leaves[i]
        res = Tensor(o._data)
        if FWD.levels:                      # dual tensors: the tangents fn's ops computed
            forward_ad.carry_over(o, res)
        res.grad_fn, res._out_idx, res._requires_grad = node, k, True
        leaves[i] = res
    return tree_unflatten(tree, leaves)


class GradcheckError(RuntimeError):
    pass


def gradcheck(fn: Callable, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              raise_exception: bool = True) -> bool:
    """Compare autograd gradients of fn at `inputs` with central finite differences (float64)."""
    inputs = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    xs = []
    for x in inputs:
        if isinstance(x, Tensor) and x._requires_grad and x.dtype is not dt.f64:
            raise GradcheckError(f"gradcheck: inputs that require grad must be float64, got "
                                 f"{x.dtype.name} (at {user_location()})")
        xs.append(x)
    wrt = [x for x in xs if isinstance(x, Tensor) and x._requires_grad]
    out = fn(*xs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    for k, o in enumerate(outs):
        n_out = o.numel()
        analytic = [np.zeros((n_out, w.numel())) for w in wrt]
        for r in range(n_out):
            ct = np.zeros(n_out)
            ct[r] = 1.0
            gs = autograd_grad([o], wrt, [Tensor(ct.reshape(o.shape))], retain_graph=True,
                               allow_unused=True)
            for j, g in enumerate(gs):
                if g is not None:
                    analytic[j][r] = g._data.reshape(-1)
        for j, w in enumerate(wrt):
            numeric = np.zeros((n_out, w.numel()))
            w._data = np.ascontiguousarray(w._data)
            flat = w._data.reshape(-1)
            for c in range(w.numel()):
                orig = flat[c]
                # evaluated with grad mode on: fn may itself use autograd (double backward)
                flat[c] = orig + eps
                hi = _as_outs(fn(*xs))[k]._data.reshape(-1).copy()
                flat[c] = orig - eps
                lo = _as_outs(fn(*xs))[k]._data.reshape(-1).copy()
                flat[c] = orig
                numeric[:, c] = (hi - lo) / (2 * eps)
            if not np.allclose(analytic[j], numeric, atol=atol, rtol=rtol):
                if not raise_exception:
                    return False
                err = np.abs(analytic[j] - numeric).max()
                raise GradcheckError(f"Jacobian mismatch for output {k} with respect to input "
                                     f"{j}: max abs difference {err:.3g}\nnumerical:\n{numeric}\n"
                                     f"analytical:\n{analytic[j]}")
    return True


def _as_outs(out) -> Sequence[Tensor]:
    return out if isinstance(out, (tuple, list)) else (out,)


__all__ = ["Function", "FunctionCtx", "checkpoint", "gradcheck", "GradcheckError"]
