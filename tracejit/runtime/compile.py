"""`@tj.compile`: trace once per signature, optimize, compile through a backend, cache."""
from __future__ import annotations

import functools
import threading
import time
import weakref
from collections import namedtuple
from typing import Any, Callable, Sequence

import numpy as np

from ..ir import dtypes as dt
from ..ir.autodiff import split, vjp_graph
from ..ir.core import user_location
from ..ir.passes import optimize
from ..ir.printer import print_graph
from ..ir.verify import verify
from ..tracer import autocast as _autocast
from ..tracer.pytree import tree_flatten, tree_unflatten
from ..tracer.rng import default_generator
from ..tracer.state import STATE, note_reads
from ..tracer.tensor import Tensor
from ..tracer.trace import Traced, arg_names, trace
from . import captures
from .backend import get_backend
from .debug import dump, log_enabled, log_recompile
from .devices import CPU, Device, device as as_device, device_of, is_gpu_array
from .grad_node import CompiledNode

CacheInfo = namedtuple("CacheInfo", "hits misses entries")
_ALL: "weakref.WeakSet[CompiledFunction]" = weakref.WeakSet()


def _leaf_key(x: Any):
    """What a leaf contributes to the cache key: its shape and dtype (weak scalars: a kind)."""
    if isinstance(x, Tensor):
        d = x._data
        return (x.shape, x.dtype) if type(d) is np.ndarray or x._traced else \
            (x.shape, x.dtype, str(device_of(d)))
    if is_gpu_array(x):
        return (x.shape, dt.from_numpy(x.dtype), str(device_of(x)))
    if isinstance(x, bool):
        return "b"
    if isinstance(x, int):
        return "i"
    if isinstance(x, float):
        return "f"
    a = np.asarray(x)
    d = dt.from_numpy(a.dtype)
    if d is None:
        raise TypeError(f"unsupported array dtype {a.dtype} for a compiled function argument "
                        f"(at {user_location()})")
    return (a.shape, d)


def _describe(k) -> str:
    if isinstance(k, str):
        return {"b": "bool", "i": "int", "f": "float"}[k]
    shape, d = k[:2]
    return f"{d.name}[{','.join(map(str, shape))}]" + (f" on {k[2]}" if len(k) > 2 else "")


def _fast_key(args) -> tuple | None:
    """For calls whose arguments are all arrays, eager Tensors that need no gradient, or Python
    scalars: (cache key, the arguments as arrays or scalars), in one pass. None otherwise."""
    key, vals = [], []
    for a in args:
        t = type(a)
        if t is np.ndarray:
            key.append((a.shape, a.dtype))
            vals.append(a)
        elif t is Tensor:
            d = a._data
            if (a._requires_grad and STATE.grad_enabled) or type(d) is not np.ndarray:
                return None
            key.append((d.shape, d.dtype))
            vals.append(d)
        elif t is float or t is int or t is bool:
            key.append(t)
            vals.append(a)
        else:
            return None
    return tuple(key), vals


class _Flight:
    """A compilation in progress: the thread doing it, and an event set when it ends."""

    __slots__ = ("owner", "done")

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self.done = threading.Event()


class Entry:
    """One compiled signature."""

    def __init__(self, traced: Traced, graph, exe, compile_s: float, device: Device = CPU) -> None:
        self.traced = traced
        self.device = device
        self.graph = graph
        self.exe = exe
        self.captures = traced.captures
        self.writes = traced.writes             # captures updated in place: the last outputs
        self.n_user = len(graph.outputs) - len(self.writes)
        ids = {id(c) for c in self.captures}
        self.watched = self.captures + [w for w in self.writes if id(w) not in ids]
        self.cap_sig = captures.signature(self.watched)
        self.plain = not self.watched and not traced.guards    # nothing to check per call
        self.in_avals = graph.in_avals
        self.grad_cache: dict[tuple, tuple] = {}
        self.grad_lock = threading.Lock()
        self.compile_s = compile_s
        self.single_out = traced.out_tree == ("leaf",)
        self.has_scalars = any(v.ndim == 0 for v in graph.inputs)
        self.n_random = traced.n_random          # random ops: the graph's last two inputs
        self.n_hidden = 2 if self.n_random else 0  # are the generator's seed and offset

    def hidden_inputs(self) -> list[np.ndarray]:
        """This call's seed and offset, advancing the device's generator past them."""
        if not self.n_random:
            return []
        return default_generator(self.device).hidden_inputs(self.n_random)

    def fast_ok(self) -> bool:
        """Captures unchanged and none of them needs a gradient now."""
        return self.stale_capture() is None and not (
            STATE.grad_enabled and any(c._requires_grad for c in self.captures))

    def stale_capture(self) -> str | None:
        if self.plain:
            return None
        return captures.changed(self.watched, self.cap_sig) or self.traced.stale()

    def store_writes(self, outs: list) -> list:
        """Store the in-place updates of captures (the outputs after the user's); return the
        user's outputs."""
        captures.store_writes(self.writes, outs[self.n_user:])
        return outs[:self.n_user]


class Lowered:
    """What `.lower(*args)` returns: the graph and every stage the backend can show."""

    def __init__(self, entry: Entry) -> None:
        self._entry = entry
        self.graph = entry.graph
        self.compile_time_s = entry.compile_s

    def as_text(self) -> str:
        return print_graph(self.graph)

    def __str__(self) -> str:
        return self.as_text()

    kernels = property(lambda self: self._entry.exe.stage_text("kernels"))
    llvm_ir = property(lambda self: self._entry.exe.stage_text("llvm"))
    asm = property(lambda self: self._entry.exe.stage_text("asm"))
    cuda_source = property(lambda self: self._entry.exe.stage_text("cuda"))


class CompiledFunction:
    def __init__(self, fn: Callable, static_argnums: int | Sequence[int] = (),
                 static_argnames: str | Sequence[str] = (), device: str | None = None,
                 backend: str | None = None) -> None:
        functools.update_wrapper(self, fn)
        self.device = None if device is None else as_device(device)
        self.fn = fn
        self.static_argnums = (static_argnums,) if isinstance(static_argnums, int) \
            else tuple(static_argnums)
        self.static_argnames = (static_argnames,) if isinstance(static_argnames, str) \
            else tuple(static_argnames)
        self.backend_name = backend
        self._cache: dict[tuple, Entry] = {}
        self._fast: dict[tuple, Entry] = {}       # positional arrays only: a cheaper key
        self._last_key: tuple | None = None
        self.hits = self.misses = 0
        # compilation is single-flight per key: one thread compiles, the others wait for it
        self._lock = threading.Lock()
        self._inflight: dict[tuple, _Flight] = {}
        _ALL.add(self)

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", "f")

    def __repr__(self) -> str:
        return f"<tracejit compiled {self.name}>"

    # -- signatures ------------------------------------------------------------------------------
    def _static(self, args, kwargs) -> dict:
        static = {}
        for i in self.static_argnums:
            if i < len(args):
                static[i % len(args)] = args[i]
        for k in self.static_argnames:
            if k in kwargs:
                static[k] = kwargs[k]
        return static

    def _key(self, args, kwargs):
        static = self._static(args, kwargs)
        dyn = ([a for i, a in enumerate(args) if i not in static],
               {k: v for k, v in kwargs.items() if k not in static})
        flat, tree = tree_flatten(dyn)
        try:
            skey = tuple(sorted(((str(k), v) for k, v in static.items()), key=lambda kv: kv[0]))
            hash(skey)
        except TypeError:
            raise TypeError(f"{self.name}: static arguments must be hashable, got "
                            f"{[type(v).__name__ for v in static.values()]}") from None
        # the autocast state changes the traced graph (its casts): part of the key
        return (tree, tuple(_leaf_key(x) for x in flat), skey, _autocast.autocast_key()), \
            flat, static

    def _explain(self, old, new, names) -> str:
        if old[0] != new[0]:
            return "the structure of the arguments changed"
        if old[3] != new[3]:
            return f"autocast state: {_describe_autocast(old[3])} -> {_describe_autocast(new[3])}"
        if old[2] != new[2]:
            a, b = dict(old[2]), dict(new[2])
            k = next(k for k in b if a.get(k) != b[k])
            return f"static argument {k}: {a.get(k)!r} -> {b[k]!r}"
        for n, a, b in zip(names, old[1], new[1]):
            if a != b:
                return f"{n}: {_describe(a)} -> {_describe(b)}"
        return "unknown"

    # -- tracing and compiling -------------------------------------------------------------------
    def _trace(self, args, kwargs, static, device: Device = CPU) -> Traced:
        return trace(self.fn, args, kwargs, static, self.name, device)

    def _device_for(self, flat) -> Device:
        """The device this call runs on: `device=` if given, else where the arguments live
        (all of them on one device; host arrays and Python scalars go anywhere)."""
        if self.device is not None:
            return self.device
        devs = set()
        for x in flat:
            if isinstance(x, Tensor) and not x._traced:
                devs.add(device_of(x._data))
            elif is_gpu_array(x):
                devs.add(device_of(x))
        if len(devs) > 1:
            raise RuntimeError(f"{self.name}: arguments are on different devices "
                               f"({', '.join(sorted(map(str, devs)))}) (at {user_location()}); "
                               f"move them to one device with .to(device)")
        return next(iter(devs), CPU)

    def _backend(self, device: Device):
        return get_backend("cuda" if device.type == "cuda" else self.backend_name)

    def _entry(self, args, kwargs):
        key, flat, static = self._key(args, kwargs)
        me = threading.get_ident()
        while True:
            with self._lock:
                entry = self._cache.get(key)
                reason = None
                if entry is not None:
                    reason = entry.stale_capture()
                    if reason is None:
                        self.hits += 1
                        return entry, flat
                flight = self._inflight.get(key)
                if flight is None or flight.owner == me:   # the same thread again: no waiting
                    flight = self._inflight[key] = _Flight(me)
                    self.misses += 1
                    break
            flight.done.wait()          # then look again: its entry, or compile if it failed
        try:
            if log_enabled("recompiles"):        # naming what changed costs; only when asked
                if reason is None and self._last_key is not None:
                    names = arg_names(self.fn, [a for i, a in enumerate(args) if i not in static],
                                      {k: v for k, v in kwargs.items() if k not in static})
                    reason = self._explain(self._last_key, key, names)
                if reason is not None:
                    log_recompile(self.name, reason)
            t0 = time.perf_counter()
            device = self._device_for(flat)
            traced = self._trace(args, kwargs, static, device)
            device = captures.call_device(self.name, self.device is not None, flat,
                                          traced.captures, device)
            graph = verify(optimize(traced.graph))
            dump("ir", self.name, lambda: print_graph(graph))
            exe = self._backend(device).compile(graph)
            entry = Entry(traced, graph, exe, time.perf_counter() - t0, device)
            with self._lock:
                self._cache[key] = entry
                self._last_key = key
        finally:
            with self._lock:
                if self._inflight.get(key) is flight:
                    del self._inflight[key]
            flight.done.set()
        return entry, flat

    def lower(self, *args, **kwargs) -> Lowered:
        return Lowered(self._entry(args, kwargs)[0])

    def cache_info(self) -> CacheInfo:
        return CacheInfo(self.hits, self.misses, len(self._cache))

    def clear_cache(self) -> None:
        self._cache.clear()
        self._fast.clear()
        self._last_key = None
        self.hits = self.misses = 0

    # -- calling -----------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        if STATE.traces:                     # inside another trace: inline
            return self.fn(*args, **kwargs)
        key = None
        # (a checkpoint listening for, or standing in for, the tensors read takes the long way)
        if not kwargs and not self.static_argnums and STATE.reads is None and not STATE.subst \
                and not _autocast.STATE.active:      # (the fast key omits autocast)
            fast = _fast_key(args)
            key, vals = fast if fast is not None else (None, None)
            entry = self._fast.get(key) if key is not None else None
            if entry is not None and (entry.plain or entry.fast_ok()):
                self.hits += 1
                if entry.has_scalars:
                    vals = [np.asarray(a, v.dtype.np) if type(a) is not np.ndarray else a
                            for a, v in zip(vals, entry.graph.inputs)]
                if entry.captures:
                    vals = vals + [c._data for c in entry.captures]
                if entry.n_random:
                    vals = vals + entry.hidden_inputs()
                outs = entry.exe.run(vals)
                if entry.writes:
                    outs = entry.store_writes(outs)
                if entry.single_out:
                    return Tensor(outs[0])
                return tree_unflatten(entry.traced.out_tree, [Tensor(o) for o in outs])
        entry, flat = self._entry(args, kwargs)
        if key is not None and \
                len(entry.graph.inputs) == len(args) + len(entry.captures) + entry.n_hidden:
            self._fast[key] = entry
        arrays = []
        for x, aval in zip(flat, entry.in_avals):
            d = x._data if isinstance(x, Tensor) else x
            arrays.append(d if is_gpu_array(d) else np.asarray(d, aval.dtype.np))
        arrays += [c._data for c in entry.captures]
        tensors = [x if isinstance(x, Tensor) else None for x in flat] + list(entry.captures)
        hidden = entry.hidden_inputs()
        arrays += hidden
        tensors += [None] * len(hidden)
        if STATE.subst:
            tensors = [STATE.subst.get(id(t), t) for t in tensors]
        note_reads(tensors)
        if STATE.grad_enabled and any(t is not None and t._requires_grad for t in tensors):
            outs = self._call_with_grad(entry, arrays, tensors)
        else:
            outs = [Tensor(o) for o in entry.exe.run(arrays)]
        if entry.writes:
            outs = entry.store_writes(outs)
        return tree_unflatten(entry.traced.out_tree, outs)

    def _call_with_grad(self, entry: Entry, arrays, tensors) -> list[Tensor]:
        wrt = tuple(i for i, t in enumerate(tensors) if t is not None and t._requires_grad)
        parts = entry.grad_cache.get(wrt)
        if parts is None:
            with entry.grad_lock:       # one thread compiles; the others find its result
                parts = entry.grad_cache.get(wrt) or self._compile_grad(entry, wrt)
        fwd_exe, bwd_exe, n_out = parts
        res = fwd_exe.run(arrays)
        outs = [Tensor(o) for o in res[:n_out]]
        CompiledNode.record(self.name, entry.graph, outs, res[n_out:], bwd_exe, tensors, arrays,
                            wrt)
        return outs

    def _compile_grad(self, entry: Entry, wrt: tuple) -> tuple:
        n_out = len(entry.graph.outputs)
        joint = vjp_graph(entry.graph, wrt, self.name + "_vjp")
        fwd, bwd, _ = split(joint, len(entry.graph.inputs), n_out)
        dump("grad", self.name, lambda: print_graph(bwd))
        backend = self._backend(entry.device)
        parts = (backend.compile(verify(fwd)), backend.compile(verify(bwd)), n_out)
        entry.grad_cache[wrt] = parts
        return parts

    # -- transforms (tj.grad & co. of a compiled function) -----------------------------------------
    def _tj_transform(self, kind: str, argnums=0, has_aux: bool = False) -> "CompiledFunction":
        from ..tracer import functional as F
        if kind in ("grad", "value_and_grad"):
            return GradCompiledFunction(self, kind, argnums, has_aux)
        py = getattr(F, kind)(self.fn, argnums)
        return CompiledFunction(py, self.static_argnums, self.static_argnames, self.device,
                                backend=self.backend_name)


def _describe_autocast(key: tuple) -> str:
    return ", ".join(f"{d}:{t.name}" for d, t in key) or "off"


class GradCompiledFunction(CompiledFunction):
    """grad / value_and_grad of a compiled function, built by the reverse-mode IR transform."""

    def __init__(self, base: CompiledFunction, kind: str, argnums, has_aux: bool) -> None:
        from ..tracer import functional as F
        py = getattr(F, kind)(base.fn, argnums, has_aux)
        functools.update_wrapper(py, base.fn)
        py.__name__ = f"{kind}_{base.name}"
        super().__init__(py, base.static_argnums, base.static_argnames, base.device,
                         backend=base.backend_name)
        self.base, self.kind, self.argnums, self.has_aux = base, kind, argnums, has_aux

    def _trace(self, args, kwargs, static, device: Device = CPU) -> Traced:
        from ..tracer.functional import _argnums
        base = trace(self.base.fn, args, kwargs, static, self.name, device)
        g = base.graph
        nums = _argnums(self.argnums, len(args))
        dyn_pos = [i for i in range(len(args)) if i not in static]
        if any(i in static for i in nums):
            raise ValueError(f"{self.name}: cannot differentiate with respect to a static argument")
        # flat input ranges of each positional argument
        starts, off = {}, 0
        for i in dyn_pos:
            n = len(tree_flatten(args[i])[0])
            starts[i] = (off, n, tree_flatten(args[i])[1])
            off += n
        wrt = [j for i in nums for j in range(starts[i][0], starts[i][0] + starts[i][1])]
        for j in wrt:
            if not g.inputs[j].dtype.is_float:
                raise TypeError(f"{self.name}: differentiated arguments must be floating point, "
                                f"got {g.inputs[j].aval}")
        n_user = len(g.outputs) - len(base.writes)     # then the captures' in-place updates
        out_leaves = g.outputs[:n_user]
        loss = out_leaves[0] if out_leaves else None
        if loss is None or loss.aval.size != 1 or not loss.dtype.is_float or \
                (not self.has_aux and len(out_leaves) != 1):
            raise TypeError(f"{self.name}: the function must return a scalar float Tensor"
                            + (" (and aux)" if self.has_aux else "")
                            + f", got {[str(v.aval) for v in out_leaves]}")
        joint = vjp_graph(g, wrt, self.name, seed_first=True)
        dump("grad", self.name, lambda: print_graph(joint))
        n_out = len(g.outputs)
        grads = joint.outputs[n_out:]
        it = iter(range(len(grads)))
        grad_trees = [tree_unflatten(starts[i][2], [("g", next(it)) for _ in range(starts[i][1])])
                      for i in nums]
        gtree = grad_trees[0] if isinstance(self.argnums, int) else tuple(grad_trees)
        value = ("v", 0)
        if self.has_aux:
            aux = tree_unflatten(base.out_tree, [("v", k) for k in range(n_user)])[1]
            value = (value, aux)
        struct = (gtree if self.kind == "grad" else (value, gtree))
        if self.kind == "grad" and self.has_aux:
            struct = (gtree, value[1])
        order = []
        leaves, out_tree = tree_flatten(struct, leaf=lambda x: isinstance(x, tuple) and
                                        len(x) == 2 and x[0] in ("g", "v"))
        for kind, k in leaves:
            order.append(joint.outputs[n_out + k] if kind == "g" else joint.outputs[k])
        joint.outputs = order + joint.outputs[n_user:n_out]
        return Traced(joint, out_tree, base.captures, base.guards, base.n_random,
                      bindings=base.bindings, writes=base.writes)


def compile(fn: Callable | None = None, *, static_argnums=(), static_argnames=(),  # noqa: A001
            device: str | None = None, backend: str | None = None):
    """Compile `fn`: `@tj.compile` or `tj.compile(fn, static_argnums=..., ...)`."""
    if fn is None:
        return lambda f: CompiledFunction(f, static_argnums, static_argnames, device, backend)
    return CompiledFunction(fn, static_argnums, static_argnames, device, backend)


def jit(fn=None, **kw):
    return compile(fn, **kw)


def clear_cache() -> None:
    """Drop every compiled function's in-memory cache."""
    for f in list(_ALL):
        f.clear_cache()
