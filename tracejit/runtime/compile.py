"""`@tj.compile`: trace once per signature, optimize, compile through a backend, cache."""
from __future__ import annotations

import functools
import threading
import time
import types
import warnings
import weakref
from collections import namedtuple
from typing import Callable, Sequence

import numpy as np

from ..ir.core import user_location
from ..ir.passes import optimize
from ..ir.printer import print_graph
from ..ir.verify import verify
from ..tracer import autocast as _autocast
from ..tracer import functional, fused, fused_nograd, transform_cache, views
from ..tracer.forward_ad import FWD, any_dual
from ..tracer.function import TRACED_APPLIES
from ..tracer.pytree import tree_flatten, tree_unflatten
from ..tracer.state import STATE, note_reads
from ..tracer.tensor import Tensor
from ..tracer.tensor_base import wrap_array
from ..tracer.trace import Traced, arg_names, trace
from . import captures
from .backend import get_backend
from .gc_pause import gc_paused
from .buffers import clear_pools
from ..debug import dump, log_enabled, log_recompile
from ..devices import CPU, Device, device as as_device, device_of, is_gpu_array
from .compiled_module import CompiledModule
from .entry import Entry, Lowered, TracedSources
from .grad_trace import pending_passes
from .grad_node import call_with_grad
from .signature import explain, fast_key, leaf_key

CacheInfo = namedtuple("CacheInfo", "hits misses entries")
MAX_VARIANTS = 8              # traces kept per signature (see CompiledFunction._variants)
_ALL: "weakref.WeakSet[CompiledFunction]" = weakref.WeakSet()


def _standard_passes(g):
    return verify(optimize(g))


class _Flight:
    """A compilation in progress: the thread doing it, and an event set when it ends."""

    __slots__ = ("owner", "done")

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self.done = threading.Event()


class CompiledFunction:
    def __init__(self, fn: Callable, static_argnums: int | Sequence[int] = (),
                 static_argnames: str | Sequence[str] = (), device: str | None = None,
                 backend: str | None = None, mode: str | None = None) -> None:
        functools.update_wrapper(self, fn)
        self.mode = check_mode(mode)
        self.device = None if device is None else as_device(device)
        self.fn = fn
        self.static_argnums = (static_argnums,) if isinstance(static_argnums, int) \
            else tuple(static_argnums)
        self.static_argnames = (static_argnames,) if isinstance(static_argnames, str) \
            else tuple(static_argnames)
        self.backend_name = backend
        self._cache: dict[tuple, Entry] = {}
        # older traces of a key whose guards failed once (a few, newest first): reused when
        # they hold again, instead of tracing again
        self._variants: dict[tuple, list[Entry]] = {}
        self._fast: dict[tuple, Entry] = {}       # positional arrays only: a cheaper key
        self._last_key: tuple | None = None
        self.hits = self.misses = 0
        # compilation is single-flight per key: one thread compiles, the others wait for it
        self._lock = threading.Lock()
        self._inflight: dict[tuple, _Flight] = {}
        self._escape_keys: dict = {}        # signature -> traces that stored new tensors
        self._value_retraces = 0            # traces again because a Python value changed
        self._attr: str | None = None       # the class attribute it is (set by __set_name__)
        self._unbound: CompiledFunction | None = None   # a per-instance one: the class's
        self._warned_slots = False
        # a trace turned grad mode on (enable_grad): the caller's grad mode is part of the key
        # from then on, and a caller under no_grad gets a trace of its own (see _trace)
        self._grad_keyed = False
        # a module's method: its own `training` flag shapes the trace (dropout), so it is part
        # of the key (modules it calls guard the trace on their modes themselves)
        owner = getattr(fn, "__self__", None)
        self._mode_owner = owner if isinstance(getattr(owner, "training", None), bool) else None
        _ALL.add(self)

    def __set_name__(self, owner, name: str) -> None:
        self._attr = name

    def _is_attr_of(self, obj, name: str) -> bool:
        for klass in type(obj).__mro__:
            if name in vars(klass):
                return vars(klass)[name] is self
        return False

    def __get__(self, obj, objtype=None):
        """`@tj.compile` on a method: each instance gets a compiled function of its own, bound
        to it (so `self` is not an argument of the graph). It is cached in the instance's
        `__dict__` under the method's name: this is a non-data descriptor, so later lookups find
        it there without coming here, and it lives (and dies) with the instance (a reference
        cycle the garbage collector frees). An instance without a `__dict__` (`__slots__`) gets
        an uncached one each time: it compiles again on every call (warned once)."""
        if obj is None:
            return self
        name = self._attr or getattr(self.fn, "__name__", None)
        d = getattr(obj, "__dict__", None)
        found = d.get(name) if isinstance(d, dict) and name is not None else None
        if isinstance(found, CompiledFunction) and found._unbound is self:
            return found                    # (an explicit __get__ call: the cached one)
        nums = tuple(i - 1 if i > 0 else i for i in self.static_argnums if i != 0)
        bound = CompiledFunction(self.fn.__get__(obj, objtype), nums, self.static_argnames,
                                 self.device, backend=self.backend_name, mode=self.mode)
        bound._unbound = self
        if isinstance(d, dict) and name is not None and self._is_attr_of(obj, name):
            bound._attr = name
            d[name] = bound
        elif not self._warned_slots:
            self._warned_slots = True
            warnings.warn(f"tj.compile: {type(obj).__name__}.{self.name}: no instance "
                          f"__dict__ entry to keep its compiled method in (__slots__?), so "
                          f"every lookup compiles again (add '__dict__' to __slots__)",
                          stacklevel=2)
        return bound

    def __reduce_ex__(self, protocol):
        """A per-instance compiled method (in its instance's `__dict__`) copies and pickles as
        the method looked up again on the copy: a fresh compiled function bound to the copy."""
        if self._unbound is not None and self._attr is not None:
            return getattr, (self.fn.__self__, self._attr)
        return super().__reduce_ex__(protocol)

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
                            f"{[type(v).__name__ for v in static.values()]}; pass a tuple "
                            f"where you have a list (e.g. sequence lengths)") from None
        # the autocast state changes the traced graph (its casts): part of the key
        mode = self._mode_owner.training if self._mode_owner is not None else None
        grad = None if not self._grad_keyed else "inference" if STATE.inference else \
            STATE.grad_enabled
        return (tree, tuple(leaf_key(x) for x in flat), skey, _autocast.autocast_key(), mode,
                grad), flat, static

    # -- tracing and compiling -------------------------------------------------------------------
    # whether the caller's grad mode can change what the function computes (tj.grad of a
    # compiled function ignores it, as torch.func.grad does)
    _grad_mode_matters = True

    def _trace(self, args, kwargs, static, device: Device = CPU) -> Traced:
        """Trace the function. One that turns grad mode on itself (enable_grad inside) is
        traced for the caller's grad mode: under no_grad, its ops outside its enable_grad
        blocks are constants to reverse mode, as they record nothing eagerly."""
        off = self._grad_mode_matters and self._grad_keyed and not STATE.grad_enabled
        traced = trace(self.fn, args, kwargs, static, self.name, device, outer_off=off,
                       arg_layout=views.arg_layout)
        if traced.grad_keyed and self._grad_mode_matters and not self._grad_keyed:
            self._grad_keyed = True
            self._fast.clear()          # (its fast key omits grad mode)
            if not STATE.grad_enabled:  # found out now: trace again for this caller
                traced = trace(self.fn, args, kwargs, static, self.name, device,
                               outer_off=True, arg_layout=views.arg_layout)
        if not self._grad_mode_matters:
            traced.grad_keyed = False
        return traced

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
        if device.type == "cuda":       # reduce-overhead: CUDA graphs (runtime/cuda_graphs.py)
            return get_backend("cuda_graphs" if self.mode == "reduce-overhead" else "cuda")
        return get_backend(self.backend_name)

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
                    entry = self._other_variant(key)
                    if entry is not None:
                        self.hits += 1
                        return entry, flat
                    if reason.startswith("the Python value"):
                        self._value_changed(reason)
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
                    reason = explain(self._last_key, key, names)
                if reason is not None:
                    log_recompile(self.name, reason)
            t0 = time.perf_counter()
            device = self._device_for(flat)
            applies = TRACED_APPLIES[0]
            with gc_paused():       # no full collection mid-compile (runtime/gc_pause.py)
                traced = self._trace(args, kwargs, static, device)
                device = captures.call_device(self.name, self.device is not None, flat,
                                              traced.captures, device)
                # the passes rewrite the graph in place; a disk-cache hit runs without them
                graph = traced.graph
                # (what the graph as traced reads, before the passes fold a path away)
                sources = TracedSources(_standard_passes)
                passes = pending_passes(traced, sources)
                dump("ir", self.name, lambda: print_graph(passes()))
                exe = self._backend(device).compile(graph, passes)
            entry = Entry(traced, graph, exe, time.perf_counter() - t0, device, passes,
                          sources)
            store = key
            if self._grad_keyed and key[5] is None:    # (found out by this trace)
                store = key[:5] + ("inference" if STATE.inference else STATE.grad_enabled,)
            # custom Functions: gradients through a call go by the eager engine, which calls
            # their backward staticmethods (the IR transform cannot see them)
            entry.eager_grad = TRACED_APPLIES[0] != applies
            if entry.once:
                self._escaped(store, traced)
            with self._lock:
                if not entry.once:
                    old = self._cache.get(store)
                    if old is not None:
                        self._variants.setdefault(store, []).insert(0, old)
                        del self._variants[store][MAX_VARIANTS - 1:]
                    self._cache[store] = entry
                self._last_key = store
        finally:
            with self._lock:
                if self._inflight.get(key) is flight:
                    del self._inflight[key]
            flight.done.set()
        return entry, flat

    def _other_variant(self, key) -> Entry | None:
        """An older trace of this signature whose guards hold now (the `.grad`s None again, a
        module back in training mode): it becomes the current one."""
        variants = self._variants.get(key, ())
        for i, entry in enumerate(variants):
            if entry.stale_capture() is None:
                variants[i] = self._cache[key]
                self._cache[key] = entry
                return entry
        return None

    def _value_changed(self, reason: str) -> None:
        """A Python number (or string, tuple, index array) the function reads from a global
        or closure changed, so it traces again (a trace bakes such values in). Said once, at
        the 8th time: a value that changes every call (a step counter) belongs in the
        arguments, where it is a traced 0-d input and never retraces."""
        self._value_retraces += 1
        if self._value_retraces == 8:
            warnings.warn(f"{self.name} traced again 8 times because Python values it reads "
                          f"from outside changed ({reason}); pass such a value as an argument "
                          f"instead", stacklevel=4)

    def _escaped(self, key, traced: Traced) -> None:
        """This trace stored tensors it made into outside state: its call stores their values
        and is not cached (see tracer/trace.py's find_escapes). Twice for one signature means
        every call does it: say so (once), since every call then traces again."""
        seen = self._escape_keys[key] = self._escape_keys.get(key, 0) + 1
        if seen != 2:
            return
        where = ", ".join(sorted({f"{t._data.aval} made at {t._data.producer.loc}"
                                  if t._data.producer is not None else str(t._data.aval)
                                  for t in traced.escapes}))
        warnings.warn(f"{self.name}: every call stores tensors it makes into state outside the "
                      f"function ({where}), so every call traces again; return them instead, "
                      f"or create them once outside and update them in place", stacklevel=4)

    def lower(self, *args, **kwargs) -> Lowered:
        return Lowered(self._entry(args, kwargs)[0])

    def cache_info(self) -> CacheInfo:
        return CacheInfo(self.hits, self.misses,
                         len(self._cache) + sum(map(len, self._variants.values())))

    def clear_cache(self) -> None:
        self._cache.clear()
        self._variants.clear()
        self._fast.clear()
        self._escape_keys.clear()
        self._last_key = None
        self.hits = self.misses = 0

    # -- calling -----------------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        if STATE.traces:                     # inside another trace: inline
            return self.fn(*args, **kwargs)
        if FWD.levels and any_dual(tree_flatten((args, kwargs))[0]):
            # forward_ad dual tensors: run the Python function on them, so tangents flow
            return self.fn(*args, **kwargs)
        key = None
        # (a checkpoint listening for, or standing in for, the tensors read takes the long way)
        if not kwargs and not self.static_argnums and STATE.reads is None and not STATE.subst \
                and not _autocast.STATE.active:      # (the fast key omits autocast)
            fast = fast_key(args)
            key, vals = fast if fast is not None else (None, None)
            if key is not None and self._mode_owner is not None:
                key += (self._mode_owner.training,)
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
                if entry.extra:
                    outs = entry.store_writes(outs, args)
                if entry.single_out:
                    return wrap_array(outs[0])
                return tree_unflatten(entry.traced.out_tree, [wrap_array(o) for o in outs])
        entry, flat = self._entry(args, kwargs)
        if entry.traced.backward_ran and STATE.grad_enabled:
            _no_grad_arguments(flat, self.name)
        if key is not None and not entry.once and not entry.traced.grad_keyed and \
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
        # (traced for a caller under no_grad, its enable_grad blocks still record: outer_off)
        if entry.differentiable and (STATE.grad_enabled or entry.traced.outer_off) and \
                any(t is not None and t._requires_grad for t in tensors):
            if entry.eager_grad:
                return self.fn(*args, **kwargs)
            outs = call_with_grad(self.name, entry, arrays, tensors, self._backend)
        else:
            outs = [Tensor(o) for o in entry.exe.run(arrays)]
        if entry.extra:
            outs = entry.store_writes(outs, flat)
        return tree_unflatten(entry.traced.out_tree, outs)

    # -- transforms (tj.grad & co. of a compiled function) -----------------------------------------
    def transform(self, kind: str, argnums=0) -> "CompiledFunction":
        """`kind` ("jacobian", "hessian", "jacfwd", "jacrev") of this function, compiled
        (tracejit.transforms calls this for the public tj.jacobian & co.; grad and
        value_and_grad are built by the reverse-mode IR transform: grad_compiled.py)."""
        py = getattr(functional, kind)(self.fn, argnums)
        return CompiledFunction(py, self.static_argnums, self.static_argnames, self.device,
                                backend=self.backend_name, mode=self.mode)


def _no_grad_arguments(flat: list, name: str) -> None:
    """A function that runs backward() inside fills the .grad of the tensors it captures
    (parameters, globals), never of its arguments: one that requires grad is refused rather
    than left without its gradient."""
    for x in flat:
        if isinstance(x, Tensor) and x._requires_grad:
            raise RuntimeError(
                f"{name}: an argument {x.dtype.name}{list(x.shape)} requires grad, and the "
                f"compiled function runs backward() inside (at {user_location()}): backward "
                f"inside a compiled function fills the .grad of the tensors it reads from its "
                f"closure, globals or modules, not of its arguments. Pass that tensor as a "
                f"capture, or call the function with x.detach()")


def _is_module(fn) -> bool:
    """An object called through its forward (an nn.Module), not a function or method."""
    return not isinstance(fn, (types.FunctionType, types.MethodType, types.BuiltinFunctionType,
                               functools.partial, CompiledFunction, CompiledModule)) and \
        callable(fn) and callable(getattr(fn, "forward", None))


def compile(fn: Callable | None = None, *, static_argnums=(), static_argnames=(),  # noqa: A001
            device: str | None = None, backend: str | None = None, mode: str | None = None):
    """Compile `fn`: `@tj.compile` or `tj.compile(fn, static_argnums=..., ...)`; a function,
    a method (also as a decorator in a class body) or a module (see CompiledModule).
    `mode`: "default", or "reduce-overhead" (torch.compile's spelling): on a CUDA device each
    compiled step with static shapes replays its launches from a CUDA graph
    (runtime/cuda_graphs.py); on the CPU it changes nothing."""
    check_mode(mode)
    if fn is None:
        return lambda f: compile(f, static_argnums=static_argnums,
                                 static_argnames=static_argnames, device=device, backend=backend,
                                 mode=mode)
    own = getattr(type(fn), "__tj_compile__", None)
    if own is not None:   # a module that compiles itself its own way (DistributedDataParallel)
        extra = {} if mode is None else {"mode": mode}
        return own(fn, static_argnums=static_argnums, static_argnames=static_argnames,
                   device=device, backend=backend, **extra)
    if _is_module(fn):
        return CompiledModule(fn, lambda call: CompiledFunction(call, static_argnums,
                                                                static_argnames, device, backend,
                                                                mode))
    return CompiledFunction(fn, static_argnums, static_argnames, device, backend, mode)


MODES = ("default", "reduce-overhead")


def check_mode(mode: str | None) -> str:
    """tj.compile's `mode`, checked ("default" when None)."""
    if mode is None:
        return "default"
    if mode not in MODES:
        hint = " (max-autotune is torch's Triton autotuning; tracejit has none)" \
            if isinstance(mode, str) and mode.startswith("max-autotune") else ""
        raise ValueError(f"tj.compile: unknown mode {mode!r}{hint}; the modes are "
                         f"{', '.join(map(repr, MODES))} (at {user_location()})")
    return mode


def clear_cache() -> None:
    """Drop every compiled function's in-memory cache, the traces kept by the plain
    transforms (tracer/transform_cache.py), the eager composites' fused plans
    (tracer/fused.py, fused_nograd.py), and the free output blocks pooled by executables (see
    buffers.OutputPool)."""
    for f in list(_ALL):
        f.clear_cache()
    transform_cache.clear()
    fused.clear()
    fused_nograd.clear()
    clear_pools()
