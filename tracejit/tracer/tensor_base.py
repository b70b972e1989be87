"""TensorBase: the data and autograd core of every Tensor, eager (holds a NumPy array) or traced
(holds an IR value): fields, shape/dtype/device, conversions, grad, hooks, detach.

The op modules (ops.py, composites.py, views.py, ...) sit above this module and below
`tensor.Tensor`, the class users see, whose body lists every method and operator as a call
into them. Those modules import this class as `Tensor` (`from .tensor_base import TensorBase as
Tensor`): `isinstance(x, Tensor)` holds for every tensor, and `Tensor(data)` makes an instance
of the final class, registered here once by tensor.py (as PyTorch's C++ ops return instances
of the Python `torch.Tensor` registered with its C core). A `type(x) is Tensor` test there
would compare with this base, which is never an object's type: they test
`type(x) in SUBCLASSES` (the final class and its subclasses) instead."""
from __future__ import annotations

import math
import warnings
import weakref
from typing import Any

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import Value, user_location
from ..ir.primitives import P
from ..devices import CPU, Device, device_of, is_host
from .eager import device_const
from .state import SPECIAL_MODES, STATE
from .lazy_copies import take_storage


# Every concrete tensor type: tensor.Tensor and its subclasses (nn.Parameter). Fast paths test
# `type(x) in SUBCLASSES`, which takes them all without an isinstance call for every Python
# number they meet
SUBCLASSES: set[type] = set()

# the class `TensorBase(data)` makes: tensor.Tensor, set by register() when tensor.py loads
_final: type | None = None


def _depends_on(v: Value, inputs: set) -> bool:
    """Whether IR value v is computed from any of `inputs` (a walk up its producers)."""
    seen, todo = set(), [v]
    while todo:
        x = todo.pop()
        if x in inputs:
            return True
        if x.producer is not None and id(x) not in seen:
            seen.add(id(x))
            todo.extend(x.producer.inputs)
    return False


class TensorBase:
    __slots__ = ("_data", "_requires_grad", "_grad", "grad_fn", "_out_idx", "_vc",
                 "_weak", "_retains_grad", "_hooks", "_accum", "_born_in", "_data_of",
                 "_view", "__weakref__")
    # _data_of: set only on `.data` of a capture (see data); _view: None but on views and
    # their bases (see views.py)

    __array_priority__ = 1000        # so `ndarray * Tensor` calls Tensor.__rmul__

    def __new__(cls, *args, **kwargs):
        # ops below tensor.py make their results as TensorBase(data): an instance of the final
        # class (a subclass, nn.Parameter, constructs itself; *args/**kwargs: whatever its
        # __init__ takes). An explicit factory would say the same at every call site; this
        # keeps those sites `Tensor(data)`. The call costs about 2,000 instructions per tensor
        # (callgrind), so the hot paths make their tensors with wrap_array (below).
        return object.__new__(_final if cls is TensorBase else cls)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        SUBCLASSES.add(cls)          # tensor.Tensor, nn.Parameter (see SUBCLASSES)

    def __init__(self, data: Any, requires_grad: bool = False, *, _weak: bool = False) -> None:
        self._data = data                   # np.ndarray or ir Value
        self._requires_grad = False
        self._grad: TensorBase | None = None
        self.grad_fn = None
        self._out_idx = 0
        self._vc = None                     # the version counter, made on first use
        self._weak = _weak                  # a traced Python scalar: does not promote
        self._retains_grad = False
        self._hooks: list | None = None
        self._accum = None
        # set (not left unset) though only views and their bases use it: readers take it with
        # getattr(t, "_view", None), which costs ~3,000 instructions on an unset slot
        self._view = None
        traces = STATE.traces
        self._born_in = traces[-1] if traces else None
        if traces:                          # (to find tensors that escape the trace)
            traces[-1].born.append(weakref.ref(self))
        if requires_grad:
            self.requires_grad_(True)

    # -- basic properties --------------------------------------------------------------------
    @property
    def _traced(self) -> bool:
        return isinstance(self._data, Value)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def dtype(self) -> dt.DType:
        d = self._data.dtype
        return d if type(d) is dt.DType else dt.NP_TO_DTYPE[d]

    @property
    def ndim(self) -> int:
        return len(self._data.shape)

    def dim(self) -> int:
        return self.ndim

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return math.prod(self._data.shape)      # (np.prod of a tuple costs ~3 us)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    @property
    def device(self) -> Device:
        if self._traced:          # a compiled function runs on one device: its trace's
            return getattr(self._born_in, "device", CPU)
        return device_of(self._data)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, b: bool) -> None:
        self.requires_grad_(b)

    def requires_grad_(self, b: bool = True) -> "TensorBase":
        if not self.is_leaf:
            if not b:
                raise RuntimeError("you can only change requires_grad flags of leaf variables; "
                                   "use .detach() to get a tensor that does not require grad")
            return self
        if b and not self.dtype.is_float:
            raise RuntimeError(f"only Tensors of floating point dtype can require gradients "
                               f"(got {self.dtype}) (at {user_location()})")
        self._requires_grad = bool(b)
        return self

    @property
    def grad(self) -> "TensorBase | None":
        if not self.is_leaf and not self._retains_grad and self._requires_grad:
            warnings.warn("The .grad attribute of a Tensor that is not a leaf Tensor is being "
                          "accessed. Its .grad attribute won't be populated during backward(). "
                          "Use .retain_grad() on the non-leaf Tensor if you want its gradient.",
                          UserWarning, stacklevel=2)
        if STATE.traces and self._captured():     # see grad_slots.py
            STATE.traces[-1].grad_slots.note(self)
        return self._grad

    @grad.setter
    def grad(self, g: "TensorBase | None") -> None:
        if g is not None and tuple(g.shape) != self.shape:
            raise RuntimeError(f"assigned grad has shape {list(g.shape)} but the tensor has "
                               f"shape {list(self.shape)}")
        if STATE.traces and self._captured():
            slots = STATE.traces[-1].grad_slots
            slots.note(self, observe=False)
            slots.assigned(self)
        self._grad = g

    def _own(self) -> np.ndarray:
        """Make the storage writable (a read-only view is a lazy copy) before aliasing it."""
        if not self._traced and not getattr(self._data.flags, "writeable", True):
            take_storage(self)
        return self._data

    def _detached_data(self) -> "TensorBase":
        """`.data` (tensor.Tensor.data adds the view bookkeeping): the same storage, detached,
        with a version counter of its own (as PyTorch)."""
        if self._captured():
            d = self.detach()
            # in-place ops on d write back into the capture, as they would into shared storage
            d._data_of = (self, STATE.traces[-1])
            return d
        if self._traced:        # a new value the IR's reverse mode cannot differentiate
            return self.detach()
        return TensorBase(self._own())

    def _captured(self) -> bool:
        """An eager tensor from outside the innermost active trace: the trace reads it as an
        input (see TraceContext), never as a constant."""
        traces = STATE.traces
        return bool(traces) and not self._traced and self._born_in is not traces[-1]

    # -- conversion --------------------------------------------------------------------------
    def _concrete(self, what: str, guard: bool = True) -> np.ndarray:
        if self._traced and not any(c.graph is self._data.graph for c in STATE.traces):
            loc = self._data.producer.loc if self._data.producer is not None else "?"
            raise RuntimeError(
                f"{what}: this tensor {self._data.aval} was made while tracing a compiled "
                f"function (at {loc}) and kept outside it, but that trace never ran to give it "
                f"a value (it failed, or was only lowered) (at {user_location()}); run the "
                f"compiled function, or make such state outside it")
        vmapping = self._traced and next((c for c in STATE.traces if c.transform == "vmap"
                                          and c.graph is self._data.graph), None)
        if vmapping and not _depends_on(self._data, vmapping.batched):
            raise RuntimeError(
                f"{what} needs a concrete value, but this tensor {self._data.aval} is computed "
                f"inside tj.vmap (at {user_location()}), where every tensor is traced: compute "
                f"it outside the vmapped function and pass it in with in_axes=None, or use "
                f"tj.where(cond, a, b) for data-dependent choices")
        if vmapping:
            raise RuntimeError(
                f"{what} on a batched tensor {self._data.aval} inside tj.vmap (at "
                f"{user_location()}): the vmapped function runs once for the whole batch, so "
                f"Python control flow and conversions cannot depend on the values of its "
                f"tensors; use tj.where(cond, a, b) for data-dependent choices")
        if self._traced:
            raise RuntimeError(
                f"{what} needs a concrete value, but this tensor {self._data.aval} is traced "
                f"inside @tj.compile (at {user_location()}). Python control flow and conversions "
                f"cannot depend on traced values: use tj.where(cond, a, b) for data-dependent "
                f"choices, or mark the argument static (static_argnums / static_argnames).")
        if guard and STATE.traces:
            # a capture's value read into Python: the traces it is foreign to depend on it
            for ctx in reversed(STATE.traces):
                if self._born_in is ctx:
                    break
                ctx.guard_read(self)
        return self._data

    def numpy(self) -> np.ndarray:
        if self._requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. "
                               "Use tensor.detach().numpy() instead.")
        self._concrete("numpy()")
        self._on_host("numpy()")
        return self._own()

    def _on_host(self, what: str) -> None:
        if not is_host(self._data):
            raise TypeError(f"{what}: can't convert a {self.device} tensor to a NumPy array; "
                            f"use .cpu() to copy it to host memory first")

    def _host(self, what: str) -> np.ndarray:
        """The value in host memory (copied from the GPU for a cuda tensor)."""
        a = self._concrete(what)
        return a if is_host(a) else a.get()

    def __array__(self, dtype=None, copy=None):
        a = self._concrete("converting to a NumPy array")
        self._on_host("converting to a NumPy array")
        return a.astype(dtype) if dtype is not None else a

    def item(self):
        a = self._host("item()")
        if a.size != 1:
            raise ValueError(f"item(): only one-element tensors can be converted to Python "
                             f"scalars, got shape {list(a.shape)}")
        return a.reshape(()).item()

    def tolist(self):
        return self._host("tolist()").tolist()

    def __bool__(self) -> bool:
        a = self._host("bool() (an `if` or `while` on a tensor)")
        if a.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with more than one value "
                               f"(shape {list(a.shape)}) is ambiguous")
        return bool(a.reshape(()))

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if not self.dtype.is_int:
            raise TypeError("only integer tensors can be used as an index")
        return int(self.item())

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        extra = ""
        if self.grad_fn is not None:
            extra = f", grad_fn=<{self.grad_fn.name()}>"
        elif self._requires_grad:
            extra = ", requires_grad=True"
        if self._traced:
            return f"Tensor(traced {self._data.aval}{extra})"
        if not is_host(self._data):
            extra = f", device='{self.device}'" + extra
        a = self._concrete("repr", guard=False)
        body = np.array2string(a if is_host(a) else a.get(), separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype.name}{extra})"

    # -- the registry's binding protocol (__tj_bind__: tensor.Tensor) ------------------------
    def __tj_const__(self, array: np.ndarray) -> "TensorBase":
        if self._traced:
            return TensorBase(self._data.graph.emit(P.constant, [], {"value": array}))
        return TensorBase(device_const(array, self._data))

    # -- autograd (backward: tensor.Tensor) ------------------------------------------------
    def detach(self) -> "TensorBase":
        if self._captured():
            return lift(self).detach()
        if self._traced:
            return TensorBase(self._data.graph.emit(P.stop_gradient, [self._data], {}))
        t = TensorBase(self._own())
        t._version = self._version
        return t

    def detach_(self) -> "TensorBase":
        self.grad_fn = None
        self._requires_grad = False
        return self

    def retain_grad(self) -> None:
        if not self._requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if not self.is_leaf and not self._retains_grad:
            self._retains_grad = True
            if self.grad_fn.retained is None:
                self.grad_fn.retained = {}
            self.grad_fn.retained[self._out_idx] = weakref.ref(self)

    @property
    def retains_grad(self) -> bool:
        return self._retains_grad

    def register_hook(self, hook):
        """`hook(grad)` runs when this tensor's gradient is computed; a returned tensor
        replaces the gradient. Returns a handle with `.remove()`."""
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self.grad_fn is None:
            if self._hooks is None:
                self._hooks = []
            hooks = self._hooks
        else:
            if self.grad_fn.out_hooks is None:
                self.grad_fn.out_hooks = {}
            hooks = self.grad_fn.out_hooks.setdefault(self._out_idx, [])
        hooks.append(hook)
        return _RemovableHandle(hooks, hook)

    @property
    def _version_count(self) -> int:
        return self._version[0]

    @property
    def _version(self) -> list:
        """The version counter, [n], shared with detach() aliases and views. Made on first
        use: most tensors are never changed in place, aliased or saved by an op that checks
        them, and a list for each was one more object per op for the garbage collector to
        count (autograd.SavedTensor reads `_vc` itself: None is version 0)."""
        vc = self._vc
        if vc is None:
            vc = self._vc = [0]
        return vc

    @_version.setter
    def _version(self, counter: list) -> None:
        self._vc = counter


class _RemovableHandle:
    def __init__(self, hooks: list, hook) -> None:
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def lift(t: TensorBase) -> TensorBase:
    """`t` as a traced tensor of the innermost trace if it is a capture there (an eager tensor
    from outside that trace: an input read afresh at every call); `t` itself otherwise."""
    if not t._captured():
        return t
    ctx = STATE.traces[-1]
    v = ctx.capture(t)
    tape = ctx.tape_read(t, v)      # written in the trace with tape history (trace.py)
    return TensorBase(v, _weak=t._weak) if tape is None else tape


def is_tensor(x: Any) -> bool:
    return isinstance(x, TensorBase)


_new_object = object.__new__


def wrap_array(data: Any) -> TensorBase:
    """`Tensor(data)` (an instance of the registered final class) without TensorBase's
    Python-level __new__ (see there, ~1,300-2,000 instructions): the eager fast path
    (dispatch.py) makes one per op and a cached compiled call (runtime/compile.py) one per
    output."""
    # TensorBase.__init__(data) written out (a call with its keyword defaults and the
    # requires_grad test costs ~1,500 instructions per op); test_wrap_array_init checks that
    # two make the same tensor
    t = _new_object(_final)
    t._data = data
    t._requires_grad = False
    t._grad = None
    t.grad_fn = None
    t._out_idx = 0
    t._vc = None
    t._weak = False
    t._retains_grad = False
    t._hooks = None
    t._accum = None
    t._view = None
    t._born_in = None
    if SPECIAL_MODES[0]:        # (no trace open in any thread: no thread-local read)
        traces = STATE.traces
        if traces:
            t._born_in = traces[-1]
            traces[-1].born.append(weakref.ref(t))
    return t


def register(cls: type) -> None:
    """Make `cls` (tensor.Tensor, the one subclass that lists the methods) the class of the
    tensors that the modules below it make with `TensorBase(data)`."""
    global _final
    if _final is not None and _final is not cls:
        raise RuntimeError(f"a Tensor class is already registered: {_final.__qualname__}")
    _final = cls


def check_inplace_result(x: TensorBase, new: TensorBase, op: str) -> None:
    """The value an in-place op computed for x must fit x: its shape, and its dtype must cast
    to x's as torch allows (no float into an integer tensor, no number into a bool one)."""
    if new.shape != x.shape:
        raise RuntimeError(f"{op}: output with shape {list(x.shape)} doesn't match the "
                           f"broadcast shape {list(new.shape)} (at {user_location()})")
    if new.dtype.is_float and not x.dtype.is_float or \
            x.dtype.kind == "b" and new.dtype.kind != "b":
        raise RuntimeError(f"{op}: result type {new.dtype.name} can't be cast to the desired "
                           f"output type {x.dtype.name} (at {user_location()})")
