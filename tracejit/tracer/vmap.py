"""tj.vmap: the batching transform, as JAX's `vmap` (in_axes/out_axes) and torch.func's
(in_dims/out_dims, randomness, chunk_size).

`vmap(f)(*args)` traces f once on one example (the mapped axis of each batched argument
removed) into a Graph, turns that graph into the batched graph with the registry's batching
rules (ir/batching.py; TRACEJIT_DUMP=vmap prints it), and runs the batched graph by binding
each instruction on the real arguments. Binding is what every other transform also listens
to, so the result is eager tensors with an autograd tape when called eagerly (grad(vmap(f))),
IR of the enclosing trace under @tj.compile (compile(vmap(f)) compiles the batched graph into
kernels), and the outer graph of an enclosing vmap (nesting). Arguments with in_axes None are
not traced as inputs: f reads them as captures, so they stay unbatched (a weight shared by the
batch is multiplied as one matrix: a matmul with one batched side is one GEMM).
"""
from __future__ import annotations

import functools
import gc
import numbers
import weakref
from typing import Any, Callable

import numpy as np

from ..ir import dtypes as dt
from ..ir.batching import RANDOMNESS, BatchAxis, batch_graph
from ..ir.core import Value, user_location
from ..ir.primitives import P, bind, broadcast, const_like
from ..ir.printer import print_graph
from ..devices import to_device
from ..debug import dump
from . import ops
from .pytree import tree_flatten, tree_unflatten
from .rng import _as_i64, all_states, default_generator, replaying, trace_rng_position
from .stacking import movedim
from .state import STATE, current_trace, no_grad
from .tensor_base import TensorBase as Tensor
from .trace import trace
from .forward_ad import FWD, any_dual
from .function import TRACED_APPLIES
from . import transform_cache as tcache


def _err(msg: str, cls: type = ValueError) -> Exception:
    return cls(f"vmap: {msg} (at {user_location()})")


def _prefix_axes(prefix: Any, tree: Any, what: str) -> list:
    """One axis (int or None) per leaf of `tree`: `prefix` is an int/None for a whole subtree
    or a tuple/list/dict matching its structure (JAX's in_axes/out_axes rule)."""
    if prefix is None or isinstance(prefix, numbers.Integral) and not isinstance(prefix, bool):
        return [prefix] * len(tree_flatten(tree)[0])
    if isinstance(prefix, (tuple, list)) and isinstance(tree, (tuple, list)):
        if len(prefix) != len(tree):
            raise _err(f"{what} {prefix!r} has {len(prefix)} entries but the value has "
                       f"{len(tree)}")
        return [a for p, t in zip(prefix, tree) for a in _prefix_axes(p, t, what)]
    if isinstance(prefix, dict) and isinstance(tree, dict):
        if set(prefix) != set(tree):
            raise _err(f"{what} keys {sorted(prefix)} do not match the value's "
                       f"{sorted(tree)}")
        return [a for k in tree for a in _prefix_axes(prefix[k], tree[k], what)]
    raise _err(f"{what} must be an int, None, or a tuple/list/dict matching the structure of "
               f"the value, got {prefix!r} for a {type(tree).__name__}")


def _norm_axis(ax: int, ndim: int, what: str) -> int:
    if not -ndim <= ax < ndim:
        raise _err(f"{what}={ax} is out of range for a tensor of {ndim} dims", IndexError)
    return ax % ndim


def vmap(fn: Callable, in_axes: Any = 0, out_axes: Any = 0, randomness: str = "error",
         *, chunk_size: int | None = None, in_dims: Any = None, out_dims: Any = None) -> Callable:
    """Map fn over an axis of its arguments: vmap(f)(xs)[i] == f(xs[i]).

    in_axes (or in_dims): per positional argument the mapped axis, None for an argument
    shared by the whole batch; an int or None applies to every argument, a tuple/list/dict
    gives one per argument (nested like the argument). out_axes (or out_dims): where the
    mapped axis goes in each result. randomness: 'error' (random numbers raise), 'different'
    (each example its own) or 'same' (one set for the batch), as torch.func.vmap.
    chunk_size: run the batch in chunks of at most this size (less memory)."""
    if in_dims is not None:
        in_axes = in_dims
    if out_dims is not None:
        out_axes = out_dims
    if randomness not in RANDOMNESS:
        raise _err(f"randomness must be one of {', '.join(RANDOMNESS)}, got {randomness!r}")
    if chunk_size is not None and (not isinstance(chunk_size, numbers.Integral)
                                   or chunk_size < 1):
        raise _err(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if isinstance(in_axes, list):
        in_axes = tuple(in_axes)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        axes = in_axes
        if isinstance(axes, tuple) and len(axes) != len(args):
            raise _err(f"in_axes {axes!r} has {len(axes)} entries but the function got "
                       f"{len(args)} positional arguments")
        flat, tree = tree_flatten(tuple(args))
        leaf_axes = _prefix_axes(axes, tuple(args), "in_axes")
        size, norm = None, []
        for x, a in zip(flat, leaf_axes):
            if a is None:
                norm.append(None)
                continue
            if not isinstance(x, (Tensor, np.ndarray)):
                raise _err(f"in_axes={a} for an argument of type {type(x).__name__}: only "
                           f"tensors can be mapped over; use None for it")
            a = _norm_axis(a, len(x.shape), "in_axes")
            n = x.shape[a]
            if size is not None and n != size:
                shapes = [tuple(y.shape) for y in flat if hasattr(y, "shape")]
                raise _err(f"the mapped axes of the arguments have different sizes: {size} "
                           f"and {n} (shapes {shapes})")
            size = n
            norm.append(a)
        if size is None:
            raise _err("at least one argument must be a tensor mapped over (an in_axes entry "
                       "that is not None)")
        if chunk_size is not None and size > chunk_size:
            return _chunked(wrapper_one, flat, norm, tree, kwargs, size)
        return wrapper_one(flat, norm, tree, kwargs, size)

    def wrapper_one(flat, norm, tree, kwargs, size):
        return _vmap_call(fn, flat, norm, tree, kwargs, size, out_axes, randomness)

    def _chunked(call, flat, norm, tree, kwargs, size):
        pieces = []
        # randomness='same': one set of numbers for the whole batch, so every chunk draws
        # what the first one drew (as torch.func.vmap does)
        same = randomness == "same"
        states, pos = (all_states(), trace_rng_position()) if same else (None, None)
        for lo in range(0, size, chunk_size):
            hi = min(lo + chunk_size, size)
            part = [x if a is None else ops.as_tensor(x).narrow(a, lo, hi - lo)
                    for x, a in zip(flat, norm)]
            with replaying(states if lo else None, pos if lo else None):
                pieces.append(call(part, norm, tree, kwargs, hi - lo))
        leaves = [tree_flatten(p) for p in pieces]
        out_tree = leaves[0][1]
        oaxes = _prefix_axes(out_axes, tree_unflatten(out_tree, leaves[0][0]), "out_axes")
        res = []
        for k, a in enumerate(oaxes):
            if a is None:
                res.append(leaves[0][0][k])
            else:
                parts = [p[0][k] for p in leaves]
                res.append(ops.concatenate(parts, _norm_axis(a, parts[0].ndim, "out_axes")))
        return tree_unflatten(out_tree, res)

    wrapper.__name__ = f"vmap_{getattr(fn, '__name__', 'f')}"
    return wrapper


def _placeholder(x, a: int):
    """A zero-cost array of one example's shape and dtype, to trace fn on."""
    shape = tuple(x.shape[:a]) + tuple(x.shape[a + 1:])
    d = x.dtype if isinstance(x, Tensor) else dt.from_numpy(np.asarray(x).dtype)
    return np.broadcast_to(np.zeros((), d.np), shape)


def _vmap_call(fn, flat, norm, tree, kwargs, size, out_axes, randomness):
    """One (unchunked) call: the batched graph of fn for these arguments, kept per signature
    (tracer/transform_cache.py) and replayed on them."""
    batched_pos = [i for i, a in enumerate(norm) if a is not None]
    outer = current_trace()
    device = outer.device if outer is not None else next(
        (flat[i].device for i in batched_pos if isinstance(flat[i], Tensor)), None)
    key = _cache_key(flat, norm, tree, kwargs, size, out_axes, randomness, device) \
        if tcache.cacheable() else None
    entry = tcache.lookup("vmap", fn, key) if key is not None else None
    if entry is not None and any(tcache.frozen(flat[i]) != v for i, v in entry.arg_values):
        entry = None                    # an index array argument with other values
    if entry is None:
        entry = _prepare(fn, flat, norm, tree, kwargs, size, randomness, device, batched_pos,
                         stand_ins=key is not None)
        if key is not None and entry.cacheable:
            tcache.store("vmap", fn, key, entry)
    if entry.custom and _differentiated(entry, flat, batched_pos):
        return _loop(fn, flat, norm, tree, kwargs, size, out_axes, randomness, entry)
    return _run_batched(entry, flat, norm, size, out_axes, device, batched_pos)


def _differentiated(e, flat, batched_pos) -> bool:
    """Whether autograd or forward mode will differentiate the results from outside the vmap:
    an input or capture requires grad (grad enabled) or carries a dual tangent."""
    ts = [flat[i] for i in batched_pos] + [flat[p] if p is not None else c
                                           for c, p in zip(e.captures, e.cap_args)]
    ts = [t for t in ts if isinstance(t, Tensor)]
    return (STATE.grad_enabled and any(t._requires_grad for t in ts)) or \
        (bool(FWD.levels) and any_dual(ts))


def _loop(fn, flat, norm, tree, kwargs, size, out_axes, randomness, e):
    """vmap as a loop over the examples, for a function that applies custom autograd.Functions
    whose results are differentiated from outside the vmap (grad(vmap(f)), jvp(vmap(f))): the
    batched graph holds their forward's ops, whose derivatives are not the Functions' backward
    and jvp staticmethods; run one by one, each example calls them. Mapped in-place updates
    write through the examples' views; randomness as the batched run."""
    states, pos = (all_states(), trace_rng_position()) if randomness == "same" else (None, None)
    per = []
    for i in range(size):
        leaves = [x if a is None else ops.as_tensor(x).select(a, i) for x, a in zip(flat, norm)]
        with replaying(states if i else None, pos if i else None):
            per.append(tree_flatten(fn(*tree_unflatten(tree, leaves), **kwargs))[0])
    n_user = e.n_user - len(e.mutated)
    oaxes = _prefix_axes(out_axes, tree_unflatten(e.out_tree, list(range(n_user))), "out_axes")
    results = []
    for k, (b, a) in enumerate(zip(e.out_b[:n_user], oaxes)):
        col = [ops.as_tensor(p[k]) for p in per]
        if a is None:
            if b:
                raise _err(f"out_axes=None for a result {col[0].dtype.name}"
                           f"{list(col[0].shape)} that depends on the mapped inputs: it "
                           f"differs per example; give it an axis")
            results.append(col[0])
            continue
        results.append(ops.stack(col, _norm_axis(a, col[0].ndim + 1, "out_axes")))
    return tree_unflatten(e.out_tree, results)


def _cache_key(flat, norm, tree, kwargs, size, out_axes, randomness, device) -> tuple | None:
    """What a kept batched graph depends on besides its guards: the structure, each batched
    leaf's axis, shape and dtype, each unbatched tensor's shape and dtype (the tensor itself is
    read afresh), the values of other unbatched leaves and keyword arguments (constants of
    the trace), the batch size, out_axes and randomness. None: not cacheable (unhashable)."""
    parts = []
    for x, a in zip(flat, norm):
        if isinstance(x, Tensor):
            parts.append((a, tuple(x.shape), x.dtype, x._weak, str(x.device)))
        elif isinstance(x, np.ndarray):
            parts.append((a, x.shape, x.dtype.str, "array"))
        else:
            parts.append((a, tcache.const_key(x)))
    kw_leaves, kw_tree = tree_flatten(dict(sorted(kwargs.items())))
    if any(isinstance(v, (Tensor, np.ndarray)) for v in kw_leaves):
        return None                     # (compared by value, they would be ambiguous)
    key = (tree, tuple(parts), kw_tree, tuple(tcache.const_key(v) for v in kw_leaves), size,
           out_axes, randomness, str(device))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _prepare(fn, flat, norm, tree, kwargs, size, randomness, device, batched_pos,
             stand_ins: bool):
    """Trace fn on one example and batch its graph (see the module doc). With `stand_ins`
    (a trace to keep), f reads a new object for each unbatched tensor or array argument, so
    what the trace captures through it is that argument (read by position in later calls),
    never a closure's or global's reference to the same object."""
    mutated: list[int] = []             # batched arguments f updated in place (x.add_(1))
    applies = TRACED_APPLIES[0]
    given = list(flat)
    if stand_ins:
        given = [_stand_in(x) if a is None else x for x, a in zip(flat, norm)]

    def per_example(*xs):
        leaves = list(given)
        before = [x._data for x in xs]
        current_trace().batched = set(before)
        for i, x in zip(batched_pos, xs):
            leaves[i] = x
        out = fn(*tree_unflatten(tree, leaves), **kwargs)
        mutated[:] = [k for k, (x, v) in enumerate(zip(xs, before)) if x._data is not v]
        return out, tuple(xs[k] for k in mutated)

    name = getattr(fn, "__name__", "f")
    tr = trace(per_example, [_placeholder(flat[i], norm[i]) for i in batched_pos], {},
               name=name, transform="vmap", **({"device": device} if device else {}))
    g = tr.graph
    n_user = len(g.outputs) - tr.n_extra     # (then writes, new .grads, escapes, checks)
    if tr.backward_ran or tr.grad_sets:
        raise _err(".backward() inside a vmapped function is not supported; use tj.grad "
                   "(or tj.autograd.grad) on the function instead", RuntimeError)
    if tr.escapes:
        # a transform inside f (jacrev's tape) may leave a reference cycle that only the
        # collector frees: what is still alive after it is a real escape
        refs = [weakref.ref(t) for t in tr.escapes]
        tr.escapes.clear()
        gc.collect()
        tr.escapes.extend(t for t in (r() for r in refs) if t is not None)
    if tr.escapes or tr.slots:
        raise _err(f"{len(tr.escapes) + len(tr.slots)} tensor(s) made inside the vmapped "
                   f"function were kept "
                   f"outside it (stored on an object or in a global); return them instead",
                   RuntimeError)
    n_in = len(batched_pos)
    in_batched = [True] * n_in + [False] * (len(g.inputs) - n_in)
    bg, out_b = batch_graph(g, in_batched, BatchAxis(size, randomness), f"vmap_{name}")
    dump("vmap", bg.name, lambda: print_graph(bg))

    for k, t in enumerate(tr.writes):
        if out_b[n_user + k]:
            loc = g.outputs[n_user + k].producer.loc if g.outputs[n_user + k].producer else "?"
            raise RuntimeError(
                f"vmap: an in-place operation writes a batched value into the unbatched tensor "
                f"{t.dtype.name}{list(t.shape)} (at {loc}); each example would overwrite it. "
                f"Write into a batched tensor, or return the value and reduce it outside vmap")
    # unbatched arguments the trace read are captures: a later call reads its own arguments
    # there (by position), the other captures (closures, globals) are read afresh
    caps = [_arg_position(c, given, norm) for c in tr.captures]
    outside = [c for c, p in zip(tr.captures, caps) if p is None]
    first = n_in                        # (the captures follow the batched inputs)
    guards = tcache.Guards(fn, _TraceFacts(tr), outside,
                           [(v.shape, v.dtype) for v, p in
                            zip(g.inputs[first:first + len(caps)], caps) if p is None])
    # unbatched array arguments the trace did not capture (an index array, say) may be baked
    # into the graph: a later call must bring the same values
    arg_values = [(i, tcache.frozen(flat[i])) for i, a in enumerate(norm)
                  if a is None and isinstance(flat[i], np.ndarray) and i not in caps]
    return tcache.Entry(guards=guards, bg=bg, out_b=out_b, n_user=n_user, mutated=list(mutated),
                        arg_values=arg_values,
                        captures=list(tr.captures), cap_args=caps, writes=list(tr.writes),
                        write_args=[_arg_position(t, given, norm) for t in tr.writes],
                        n_random=tr.n_random, out_tree=tr.out_tree[1][0],
                        cacheable=not tr.grad_guards, custom=TRACED_APPLIES[0] != applies)


class _TraceFacts:
    """The guards of a finished trace (a Traced) in the shape transform_cache reads."""

    def __init__(self, tr) -> None:
        self.guards, self.attr_guards = tr.guards, tr.attr_guards


def _stand_in(x):
    """A new object with x's value (see _prepare); other leaves as they are."""
    if isinstance(x, np.ndarray):
        return x.view()
    if not isinstance(x, Tensor):
        return x
    if x._requires_grad or FWD.levels:      # (autograd and tangents reach x through it)
        return bind(P.reshape, x, shape=tuple(x.shape))
    return Tensor(x._data)


def _arg_position(t, flat, norm) -> int | None:
    """The position of the unbatched argument that captured tensor t is (or wraps), if any."""
    for i, (x, a) in enumerate(zip(flat, norm)):
        if a is None and (x is t or isinstance(x, np.ndarray) and t._data is x):
            return i
    return None


def _run_batched(e, flat, norm, size, out_axes, device, batched_pos):
    """Replay a prepared batched graph on this call's arguments; write back in-place updates;
    the results with their mapped axes where out_axes puts them."""
    def current(t, pos):
        return t if pos is None else ops.as_tensor(flat[pos])

    inputs = []
    for k, i in enumerate(batched_pos):
        x = ops.as_tensor(flat[i])
        if k in e.mutated and x._requires_grad and STATE.grad_enabled:
            # the replay's ops save the old value, which the write-back below overwrites:
            # they read a copy (PyTorch's in-place ops save a clone of the original alike)
            x = ops.add(x, 0)
        inputs.append(movedim(x, norm[i], 0))
    inputs += [current(c, p) for c, p in zip(e.captures, e.cap_args)]
    outs = _replay(e.bg, inputs, e.n_random, device)
    n_user, out_b = e.n_user, e.out_b
    for k, (t, p) in enumerate(zip(e.writes, e.write_args)):
        with no_grad():
            current(t, p).copy_(outs[n_user + k])

    n_mut = len(e.mutated)
    for k, v, b in zip(e.mutated, outs[n_user - n_mut:n_user], out_b[n_user - n_mut:n_user]):
        i = batched_pos[k]               # write the batch's new values into the argument
        v = v if b else broadcast(v, (size,) + tuple(v.shape))
        v = movedim(v, 0, norm[i])
        if isinstance(flat[i], Tensor):
            flat[i].copy_(v)
        else:
            np.copyto(flat[i], v.numpy())
    n_user -= n_mut
    results = []
    user_outs = outs[:n_user]
    out_tree = e.out_tree                # (the result, the updated arguments)
    oaxes = _prefix_axes(out_axes, tree_unflatten(out_tree, list(range(n_user))), "out_axes")
    for v, b, a in zip(user_outs, out_b[:n_user], oaxes):
        if a is None:
            if b:
                raise _err(f"out_axes=None for a result {v.dtype.name}{list(v.shape[1:])} that "
                           f"depends on the mapped inputs: it differs per example; give it an "
                           f"axis")
            results.append(v)
            continue
        if not b:
            v = broadcast(v, (size,) + tuple(v.shape))
        results.append(movedim(v, 0, _norm_axis(a, len(v.shape), "out_axes")))
    return tree_unflatten(out_tree, results)


def _replay(g, inputs: list, n_random: int, device) -> list:
    """Run the batched graph by binding each instruction on `inputs` (eager tensors, or
    tensors of an enclosing trace, which then records the instructions)."""
    env: dict[Value, Any] = dict(zip(g.inputs, inputs))
    like = inputs[0]
    ctx = current_trace()
    if n_random and ctx is None:        # eager: this call's streams from the generator
        seed, off = default_generator(device).reserve(n_random)
        rng = [Tensor(_as_i64(seed)), Tensor(_as_i64(off))]
        env.update(zip(g.inputs[len(g.inputs) - 2:], rng))
    for ins in g.instrs:
        if ins.prim is P.constant:
            env[ins.out] = const_like(like, ins.params["value"])
        elif ins.prim is P.random and ctx is not None:
            # inside an enclosing trace, each random op takes the next stream of that trace
            seed, off, stream = ctx.random_stream()
            env[ins.out] = Tensor(ctx.graph.emit(P.random, [seed, off],
                                                 {**ins.params, "stream": stream}, ins.loc))
        elif ins.prim is P.random:      # eager: drawn on the host, then moved (as tj.rand)
            arr = bind(P.random, *[env[v]._data for v in ins.inputs], **ins.params)
            env[ins.out] = Tensor(arr if device is None or device.type == "cpu"
                                  else to_device(arr, device))
        else:
            env[ins.out] = bind(ins.prim, *[env[v] for v in ins.inputs], **ins.params)
    return [env[v] for v in g.outputs]


__all__ = ["vmap"]
