"""PyTorch's view semantics for the view ops users call (basic indexing, select/narrow/split/
chunk/unbind, view/reshape when torch's is a view, flatten/unflatten, squeeze/unsqueeze,
transpose/permute/t/T/mT/movedim/swapaxes, diagonal, expand, view_as; detach and .data, made in
view_grad.py).

A view records its root base and `fwd`, a function that recomputes the view from the root
with the same tracer ops (a chain of views composes its steps, so every view points at the
root). The root keeps weak references to its live views. Then, in both directions
(view_writes.py):

- an in-place op on a view writes through: the root's new value is a functional put of the
  view's new value at the root positions the view reads (torch's CopySlices: differentiable),
  made by the root's own in-place path (leaf checks, captures of a trace, version counter);
- after any in-place op on a root, its live views are derived again from its new value (their
  data and grad_fn follow), eagerly and inside a trace. Eagerly, a view whose array still
  shares the root's memory and carries no autograd history needs nothing.

Eagerly a view's array is a read-only NumPy view of its root's memory (a lazy copy to other
code): an in-place op recording no history writes its result there directly. Otherwise the
positions a view reads are found lazily, only when an in-place op on it needs them, by
running `fwd` on an int64 arange of the root's shape (an eager constant, also inside a trace);
a position read twice is an expanded view, which torch refuses to write to.

Nothing here runs on the ordinary eager path: only the user-level view ops register, and an
in-place op looks at one slot (`Tensor._view`).
"""
from __future__ import annotations

import weakref
from typing import Callable

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import user_location
from ..ir.primitives import P, bind
from . import gathering, layout, ops, products, stacking
from .backward_nodes import UNTRACKED
from .node_names import rename
from .state import STATE, set_grad_mode
from .tensor_base import TensorBase as Tensor

# kinds of views: an autograd view, an output of a function returning several views (torch
# forbids in-place on those when autograd records), detach() (shares data and version counter,
# not history), .data (shares data only)
VIEW, MULTI, DETACH, DATA = "view", "multi", "detach", "data"


_NO_ARG = object()


class ViewOf:
    """Slot record of a view: its root, how to recompute it from the root (`fwd`), its kind.

    `fwd` is `_fn(r, _arg)`, or `_fn(r)` when there is no `_arg`: an eager view keeps the op
    and its key (x[key]: getitem and key) instead of a closure made per view (a function,
    its cells and their tuple: four more objects per gate slice for the garbage collector),
    as `fwd` is needed only when an in-place op reaches the view."""

    # The fields below the slots are set on few views (an in-place op reaching one, a view of
    # a detach()ed tensor): class defaults until then, then in an instance dict made only for
    # those (six slot stores per view were ~a tenth of recording a gate slice's view)
    __slots__ = ("root", "_fn", "_arg", "kind", "no_grad", "__dict__")

    # an autograd view of a detach()/.data tensor d: d (torch's base of the view: an
    # in-place op on the view gives d its history) and how to get the view from d
    via: Tensor | None = None
    via_fwd: Callable | None = None
    pos: np.ndarray | None = None       # root positions read (lazy, see positions)
    dup = False                         # a position read twice (an expanded view)
    ident = False                       # reads every root position in order
    mask: np.ndarray | None = None      # which root positions it reads (flat)

    def __init__(self, root: Tensor, fwd: Callable, kind: str, no_grad: bool) -> None:
        self.root, self._fn, self._arg = root, fwd, _NO_ARG
        self.kind, self.no_grad = kind, no_grad

    @property
    def fwd(self) -> Callable:
        fn, arg = self._fn, self._arg
        if arg is _NO_ARG:
            return fn
        return lambda r: fn(r, arg)


class Views:
    """Slot record of a root: weak references to its live views."""

    __slots__ = ("refs", "limit")

    def __init__(self) -> None:
        self.refs: list = []
        self.limit = 8


def _owner(a):
    b = getattr(a, "base", None)
    return a if b is None else b


def mark(x: Tensor, out: Tensor, fwd: Callable, kind: str = VIEW) -> Tensor:
    """Record `out = fwd(x)` as a view of x (of x's root when x is a view). A view op that
    changed nothing (x.view(x.shape), x.squeeze() without unit axes) still gives a new tensor
    object, as torch's: an identity reshape (ViewBackward0) sharing x's storage."""
    if not isinstance(out, Tensor) or not isinstance(x, Tensor):
        return out
    if out is x:
        out = bind(P.reshape, x, shape=x.shape)
    rec = getattr(x, "_view", None)
    via = None
    if type(rec) is ViewOf:
        root, first = rec.root, rec.fwd
        step = fwd
        fwd = lambda r: step(first(r))      # noqa: E731 - composed with the parent's steps
        if rec.kind in (DETACH, DATA) and kind in (VIEW, MULTI):
            via, via_fwd = (x, step) if rec.via is None else \
                (rec.via, lambda r, f=rec.via_fwd: step(f(r)))
        kind = DATA if DATA in (kind, rec.kind) else DETACH if DETACH in (kind, rec.kind) \
            else MULTI if MULTI in (kind, rec.kind) else kind
        no_grad = rec.no_grad or not STATE.grad_enabled
    else:
        root = x
        no_grad = not STATE.grad_enabled
        if rec is None:
            rec = x._view = Views()
    out._view = ViewOf(root, fwd, kind, no_grad)
    if via is not None:
        out._view.via, out._view.via_fwd = via, via_fwd
    if no_grad and root._requires_grad and not out._requires_grad and kind in (VIEW, MULTI):
        out._requires_grad, out._accum = True, UNTRACKED    # torch's flag: see view_grad.py
    if kind != DATA:        # views share their base's version counter (root._version, read
        vc = root._vc       # without the property: a view per gate slice pays for it)
        if vc is None:
            vc = root._vc = [0]
        out._vc = vc
    views = root._view
    views.refs.append(weakref.ref(out))
    if len(views.refs) > views.limit:       # drop dead views, amortized
        views.refs = [r for r in views.refs if r() is not None]
        views.limit = max(8, 2 * len(views.refs))
    return out


_new = object.__new__
_weakref = weakref.ref


def mark_host(x: Tensor, out: Tensor, fn: Callable, arg=_NO_ARG, grad_on: bool = True) -> Tensor:
    """mark(x, out, fwd) for `out`, a new eager view of the host tensor x (eager_views'
    NumPy shortcut), where fwd(r) is fn(r, arg) (fn(r) without arg) and grad_on is the grad
    mode: the same records, made without a closure or a ViewOf.__init__ call (~4,000
    instructions of a gate slice's ~35,000) when x is a root; a view of a view is composed
    by mark."""
    rec = x._view
    if rec is not None and type(rec) is not Views:
        return mark(x, out, fn if arg is _NO_ARG else lambda r: fn(r, arg))
    if rec is None:         # (Views() without its __init__ call: a new base per RNN step)
        rec = x._view = _new(Views)
        rec.refs = []
        rec.limit = 8
    v = _new(ViewOf)
    v.root, v._fn, v._arg, v.kind, v.no_grad = x, fn, arg, VIEW, not grad_on
    out._view = v
    if not grad_on and x._requires_grad and not out._requires_grad:
        out._requires_grad, out._accum = True, UNTRACKED    # torch's flag: see view_grad.py
    vc = x._vc              # views share their base's version counter
    if vc is None:
        vc = x._vc = [0]
    out._vc = vc
    refs = rec.refs
    refs.append(_weakref(out))
    if len(refs) > rec.limit:               # drop dead views, amortized
        rec.refs = [r for r in refs if r() is not None]
        rec.limit = max(8, 2 * len(rec.refs))
    return out


def viewing(fn: Callable, kind: str = VIEW) -> Callable:
    """fn (a view op taking the tensor first) that records its result as a view."""
    def view_op(x, *args, **kwargs):
        out = fn(x, *args, **kwargs)
        if isinstance(x, Tensor):
            out = mark(x, out, lambda r: fn(r, *args, **kwargs), kind)
        return out
    view_op.__name__ = getattr(fn, "__name__", "view_op")
    view_op.__doc__ = fn.__doc__
    view_op.__wrapped_view__ = fn
    return view_op


# -- view ops whose result is a view only sometimes (x[key]: indexing.getitem_view) --------------
def _stand_in(root: Tensor, offsets: bool) -> tuple[np.ndarray, np.ndarray]:
    """(an array of root's shape laid out as torch's root is, the buffer it views): root is
    contiguous unless it is a traced argument with a layout (arg_layout); with `offsets`,
    each element holds its offset in the buffer, else the buffer is booleans."""
    shape = tuple(root.shape)
    strides = _given_layout(root)
    if strides is None:
        n = int(np.prod(shape))
        buf = np.arange(n, dtype=np.int64) if offsets else np.zeros(n, np.bool_)
        return buf.reshape(shape), buf
    size = 1 + sum((d - 1) * st for d, st in zip(shape, strides)) if all(shape) else 1
    buf = np.arange(size, dtype=np.int64) if offsets else np.zeros(size, np.bool_)
    return np.lib.stride_tricks.as_strided(buf, shape, [st * buf.itemsize for st in strides]), \
        buf


def arg_layout(x: Tensor) -> tuple | None:
    """For an eager tensor passed to a compiled function: the element strides torch gives it
    when it is a view that is not C-contiguous (x.t(), x[:, ::2]), else None. Part of the
    call's cache key; the trace's tensor for x then has that layout (_given_layout)."""
    rec = x._view
    if type(rec) is not ViewOf or x.numel() <= 1:
        return None
    d, r = x._data, rec.root._data
    if type(d) is np.ndarray and type(r) is np.ndarray and d.flags.c_contiguous and \
            r.flags.c_contiguous and np.may_share_memory(d, r):
        return None     # (NumPy's view of a C-ordered root has torch's strides: no stand-in)
    arr, probe = _layout(rec)
    if not np.may_share_memory(arr, probe) or arr.flags.c_contiguous:
        return None
    return arr.strides          # (booleans: bytes are elements)


def _given_layout(t: Tensor) -> tuple | None:
    """The strides of traced argument t when the caller's tensor is a non-contiguous view
    (trace.TraceContext.arg_layouts): its contiguous() and reshape() copy where torch's do,
    so an in-place write through them does not reach the argument (it wrote into the
    caller's tensor)."""
    traces = STATE.traces
    return traces[-1].arg_layouts.get(id(t)) if traces and t._traced else None


def _layout(rec: ViewOf) -> tuple[np.ndarray, np.ndarray]:
    """(the view's elements as a NumPy view of a stand-in for its root, the stand-in): the
    strides torch would give the view, the root being contiguous. Where the view ops return a
    copy of the stand-in (detach() of a view owns its storage), it is rebuilt from the root
    positions the view reads (its ops run on an arange): taking the copy for the layout made
    x[2].detach() look non-contiguous, so its contiguous() and reshape() copied where torch's
    alias, and an in-place write through them missed the base."""
    stand_in, buf = _stand_in(rec.root, False)
    with _grad(False):
        arr = np.asarray(rec.fwd(Tensor(stand_in))._data)
    if arr.size <= 1 or np.may_share_memory(arr, buf):
        return arr, buf
    stand_in, offsets = _stand_in(rec.root, True)
    with _grad(False):
        pos = np.asarray(rec.fwd(Tensor(stand_in))._data)
    probe = np.zeros(max(offsets.size, 1), np.bool_)
    if pos.size == 0:
        return np.zeros(pos.shape, np.bool_), probe
    start = int(pos.flat[0])
    steps = []
    for k, size in enumerate(pos.shape):
        at = [0] * pos.ndim
        at[k] = 1
        steps.append(int(pos[tuple(at)]) - start if size > 1 else 0)
    grid = start + sum((np.indices(pos.shape, sparse=True)[k] * s
                        for k, s in enumerate(steps)), np.zeros((), np.int64))
    if not np.array_equal(grid, pos):
        return pos.astype(np.bool_), probe      # (no strided view reads these: a copy)
    arr = np.lib.stride_tricks.as_strided(probe[start:], pos.shape, steps, writeable=False)
    return arr, probe


def _torch_layout(x: Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """(x's elements laid out as torch's x is, as a NumPy view of a stand-in for its root, the
    stand-in), or None where torch's x is contiguous whatever its array's layout: one element
    or none, or a base that is not a traced argument with a layout (_given_layout)."""
    if x.numel() <= 1:
        return None
    rec = getattr(x, "_view", None)
    if type(rec) is ViewOf:
        return _layout(rec)
    if _given_layout(x) is not None:
        return _stand_in(x, False)
    return None


def _reshape_is_view(x: Tensor, out: Tensor) -> bool:
    """Whether torch's reshape of x to out's shape is a view (strides permitting): NumPy makes
    the same choice on a stand-in with the layout torch would give x. A base (not a view) is
    contiguous, whatever layout its array happens to have."""
    found = _torch_layout(x)
    if found is None:
        return True
    arr, probe = found
    return np.may_share_memory(arr.reshape(out.shape), probe)


def contiguous(x: Tensor, memory_format=None) -> Tensor:
    """x itself when torch's x is contiguous, else a copy (which is no view of x's base)."""
    found = _torch_layout(x)
    if found is None:
        return x
    arr, probe = found
    if arr.flags.c_contiguous and np.may_share_memory(arr, probe):
        return x
    if x.dtype is dt.bool_:
        return ops.eq(x, True)
    # (x + -0.0: -0.0 stays -0.0; torch's copy is a CloneBackward0)
    return rename(ops.add(x, -0.0 if x.dtype.is_float else 0), "CloneBackward0")


def _reshaping(fn: Callable, name: str, strict: bool = False) -> Callable:
    def reshape_op(x, *args, **kwargs):
        out = fn(x, *args, **kwargs)
        if not isinstance(x, Tensor) or (out is x and name == "flatten"):
            return out              # (torch's flatten(d, d) returns its input itself)
        if out is x or _reshape_is_view(x, out):
            out = mark(x, out, lambda r: fn(r, *args, **kwargs))
        elif strict:
            raise RuntimeError(
                f"{name}: view size is not compatible with input tensor's size and stride (at "
                f"least one dimension spans across two contiguous subspaces): {ops._fmt(x)} "
                f"viewed as {list(out.shape)} (at {user_location()}). Use .reshape(...) "
                f"instead.")
        elif name != "ravel":        # torch's reshape of a copy ends in its _unsafe_view
            rename(out, "UnsafeViewBackward0", x)
        return out
    reshape_op.__name__ = name
    reshape_op.__doc__ = fn.__doc__
    return reshape_op


def _unflatten(x, dim: int, sizes) -> Tensor:
    x = ops.as_tensor(x)
    d = ops._axes(x, dim, None, "unflatten")[0]
    sizes = tuple(int(s) for s in sizes)
    n, given = x.shape[d], list(sizes)
    known = int(np.prod([s for s in sizes if s != -1]))
    if sizes.count(-1) == 1 and known:
        # -1 stands for what is left of dim d, not of the whole tensor (which may be empty)
        sizes = tuple(n // known if s == -1 else s for s in sizes)
    if sizes.count(-1) > 1 or (-1 not in sizes and int(np.prod(sizes)) != n) or \
            any(s < -1 for s in sizes):
        raise ops._err("unflatten", f"sizes {given} don't multiply up to the size {n} of "
                       f"dim {dim} of {ops._fmt(x)}", RuntimeError)
    return ops.reshape(x, x.shape[:d] + sizes + x.shape[d + 1:])


# -- several views at once: each piece recomputed by its own narrow -------------------------------
def _pieces(x: Tensor, outs: tuple, d: int, squeeze: bool) -> tuple:
    if not isinstance(x, Tensor):
        return outs
    start = 0
    marked = []
    for o in outs:
        size = 1 if squeeze else o.shape[d]

        def fwd(r, s=start, n=size, shape=o.shape):
            piece = layout._narrow(r, d, s, n)
            return ops.reshape(piece, shape) if squeeze else piece
        marked.append(mark(x, o, fwd, MULTI))
        start += size
    return type(outs)(marked) if isinstance(outs, tuple) else marked


def _split(x, split_size_or_sections, dim: int = 0):
    outs = layout.split(x, split_size_or_sections, dim)
    return _pieces(x, outs, layout._dim("split", x, dim) if isinstance(x, Tensor) else 0, False)


def _chunk(x, chunks: int, dim: int = 0):
    outs = layout.chunk(x, chunks, dim)
    return _pieces(x, outs, layout._dim("chunk", x, dim) if isinstance(x, Tensor) else 0, False)


def _unbind(x, dim: int = 0):
    outs = layout.unbind(x, dim)
    return _pieces(x, outs, layout._dim("unbind", x, dim) if isinstance(x, Tensor) else 0, True)


def _multi(fn: Callable) -> Callable:
    """A function returning several views that torch lets in-place ops write to
    (tensor_split, hsplit, ...): piece i is recomputed as fn(root)[i] (they are few)."""
    def multi_op(x, *args, **kwargs):
        outs = fn(x, *args, **kwargs)
        if isinstance(x, Tensor):
            outs = type(outs)(mark(x, o, lambda r, i=i: fn(r, *args, **kwargs)[i])
                              for i, o in enumerate(outs))
        return outs
    multi_op.__name__ = getattr(fn, "__name__", "multi_op")
    multi_op.__doc__ = fn.__doc__
    return multi_op


# -- detach and .data: view_grad.py ---------------------------------------------------------------
def forget(t: Tensor) -> None:
    """t's storage was replaced: its views no longer follow it (nor write into it)."""
    rec = getattr(t, "_view", None)
    if type(rec) is Views:
        for r in rec.refs:
            v = r()
            if v is not None:
                v._view = None
        t._view = None


# -- grad mode for recomputing views (here and view_writes.py) ---------------------------------
class _grad:
    def __init__(self, mode: bool) -> None:
        self.mode = mode

    def __enter__(self) -> None:
        self.prev = STATE.grad_enabled
        set_grad_mode(self.mode)

    def __exit__(self, *exc) -> None:
        set_grad_mode(self.prev)


# -- in-place ops on views: view_writes.py ---------------------------------------------------------


reshape = _reshaping(ops.reshape, "reshape")
flatten = _reshaping(ops.flatten, "flatten")
unflatten = _reshaping(_unflatten, "unflatten")
permute = viewing(ops.permute)
transpose = viewing(ops.transpose)
swapaxes = viewing(ops.swapaxes)
squeeze = viewing(ops.squeeze)
unsqueeze = viewing(ops.unsqueeze)
expand = viewing(ops.expand)
broadcast_to = viewing(ops.broadcast_to)
narrow = viewing(layout.narrow)
t = viewing(layout.t)
select = viewing(stacking.select)
movedim = viewing(stacking.movedim)
diagonal = viewing(products.diagonal)
split, chunk, unbind = _split, _chunk, _unbind
tensor_split, hsplit = _multi(stacking.tensor_split), _multi(stacking.hsplit)
vsplit, dsplit = _multi(stacking.vsplit), _multi(stacking.dsplit)
ravel = _reshaping(gathering.ravel, "ravel")
# the method-only spellings (tensor.Tensor lists them)
view = _reshaping(ops.reshape, "view", strict=True)
view_as = _reshaping(layout.view_as, "view_as", strict=True)
reshape_as = _reshaping(layout.view_as, "reshape_as")
expand_as = viewing(layout.expand_as)
swapdims = swapaxes
moveaxis = movedim
full_transpose = viewing(lambda x: ops.permute(x, tuple(reversed(range(x.ndim)))))  # x.T
matrix_transpose = viewing(lambda x: ops.swapaxes(x, -1, -2))                      # x.mT
