"""What a compiled call does with the tensors its function captured (see tracer/trace.py's
TraceContext): check them before reusing a cached trace, pick the device they live on, and
store the new values of those the function updated in place."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..ir.core import user_location
from ..tracer.inplace import OverwriteNode
from ..tracer.state import STATE, internal_enable_grad, no_grad
from ..tracer.tensor import Tensor
from ..tracer.view_writes import follow_writes
from ..devices import CPU, Device, device_of, is_gpu_array, is_host, to_device


def signature(tensors: Sequence[Tensor], backward_ran: bool = False) -> list[tuple]:
    """What a trace assumed of each captured tensor: shape, dtype, device and, for a trace
    that ran backward() inside, whether it requires grad (such a step differentiates exactly
    the captures that did when traced: `p.requires_grad_(False)` between calls must not keep
    updating p). Other traces take requires_grad from each call (None: not keyed on it)."""
    return [(t.shape, t.dtype, device_of(t._data), t._requires_grad if backward_ran else None)
            for t in tensors]


def changed(tensors: Sequence[Tensor], sig: list[tuple]) -> str | None:
    """Why the captured tensors no longer match the trace's signature of them, or None."""
    for i, (t, (shape, dtype, dev, rg)) in enumerate(zip(tensors, sig)):
        if t._traced or t.shape != shape or t.dtype is not dtype:
            return f"captured tensor cap{i} changed: {dtype.name}{list(shape)} -> " \
                   f"{t.dtype.name}{list(t.shape)}"
        if rg is not None and t._requires_grad != rg:
            return f"captured tensor cap{i} changed: requires_grad {rg} -> {t._requires_grad}"
        if type(t._data) is np.ndarray:
            if dev != CPU:
                return f"captured tensor cap{i} moved: {dev} -> cpu"
        elif device_of(t._data) != dev:
            return f"captured tensor cap{i} moved: {dev} -> {device_of(t._data)}"
    return None


def call_device(name: str, explicit: bool, flat: Sequence[Any], captures: Sequence[Tensor],
                device: Device) -> Device:
    """Captures on a GPU choose the device when neither `device=` (explicit) nor the arguments
    do (host arrays go anywhere); a GPU capture elsewhere than the call's device is an error,
    since a kernel cannot read it."""
    devs = {device_of(c._data) for c in captures if not is_host(c._data)}
    if not devs:
        return device
    decided = explicit or any(isinstance(x, Tensor) and not x._traced or is_gpu_array(x)
                              for x in flat)
    if not decided and len(devs) == 1:
        return devs.pop()
    if devs != {device}:
        raise RuntimeError(f"{name}: it reads captured tensors on "
                           f"{', '.join(sorted(map(str, devs)))} but runs on {device} "
                           f"(at {user_location()}); move them with .to(device), or pass them "
                           f"as arguments")
    return device


def check_history_writes(writes: Sequence[Tensor], history: Sequence[bool]) -> None:
    """A capture written by an op that records history must be able to take it: as eagerly,
    a leaf that requires grad cannot (checked before anything is stored)."""
    for t, hist in zip(writes, history):
        if hist and t._requires_grad and t.is_leaf:
            raise RuntimeError(
                f"a compiled function updated a captured leaf tensor {t.dtype.name}"
                f"{list(t.shape)} that requires grad in place (at {user_location()}): a leaf "
                f"Variable that requires grad is being used in an in-place operation; wrap the "
                f"update in `with tj.no_grad():` or write into t.detach()")


def store_writes(writes: Sequence[Tensor], new_values: Sequence[Any],
                 counts: Sequence[int] | None = None,
                 history: Sequence[bool] | None = None) -> None:
    """Store the new values of the captures a compiled function updated in place into their
    own storage, as the eager in-place ops would (the version counter moves once per op).
    Where `history` says an op that records autograd history wrote the capture (a call with
    grad on), the capture takes the new value's history, as eagerly: `buf.copy_(w * 2)` makes
    buf require grad with a gradient path to w (storing the value alone lost that path)."""
    for i, (t, new) in enumerate(zip(writes, new_values)):
        if history is not None and history[i]:
            _take_history(t, new)
        if isinstance(new, Tensor):
            new = new._data
        data = t._data
        # two NumPy arrays need no device look-up (~1.5 us of a write: a nanoGPT-small AdamW
        # step stores 112 per call)
        if type(new) is not np.ndarray or type(data) is not np.ndarray:
            new = to_device(new, device_of(data))
        if new is not data:             # (the executable stored it there: Executable.write_back)
            if not getattr(data.flags, "writeable", True):      # a read-only lazy view
                data = t._data = data.copy()
            data[...] = new
        t._version[0] += counts[i] if counts is not None else 1
        if getattr(t, "_view", None) is not None:
            follow_writes(t)            # its views (tracer/views.py) see the new value


def _take_history(t: Tensor, new: Any) -> None:
    """Capture t's history after an in-place write of `new` (an output of the compiled call,
    recorded on the tape by runtime/grad_node.py where a gradient reaches it)."""
    if isinstance(new, Tensor) and new._requires_grad:
        t.grad_fn, t._out_idx, t._requires_grad = new.grad_fn, new._out_idx, True
    elif t._requires_grad:
        # the new value does not depend on t's old history: that history gets a zero
        # gradient, as torch's CopyBackwards/ZeroBackward0 (keeping t's old node would send
        # later gradients into it as if the value were unchanged)
        old = Tensor(t._data)
        old.grad_fn, old._out_idx, old._requires_grad = t.grad_fn, t._out_idx, True
        OverwriteNode.take(t, old, "copy_")


def check_arguments(targets: Sequence[Any]) -> None:
    """Arguments a compiled function updated in place must be able to take the new values."""
    for t in targets:
        if isinstance(t, Tensor) and t._requires_grad and STATE.grad_enabled:
            raise RuntimeError(
                f"a compiled function updated its argument {t.dtype.name}{list(t.shape)} in "
                f"place, and that argument requires grad (at {user_location()}): autograd "
                f"cannot follow an in-place update made inside a compiled call; return the new "
                f"value instead, or update a tensor that does not require grad")
        if isinstance(t, np.ndarray) and not t.flags.writeable:
            raise ValueError(f"a compiled function updated its argument, a read-only NumPy "
                             f"array {t.dtype}{list(t.shape)}, in place (at {user_location()})")


def store_arguments(targets: Sequence[Any], new_values: Sequence[Any]) -> None:
    """Store the new values of arguments a compiled function updated in place (x.mul_(2),
    x[0] = 1) into the caller's tensors or NumPy arrays, as torch.compile does."""
    for t, new in zip(targets, new_values):
        if isinstance(t, Tensor):
            # through the tensor's own in-place path: a view argument writes through to its base
            # (and its base takes the history); a new value that requires grad (an output of
            # the call's tape node) gives t its history, as the eager op would
            with internal_enable_grad() if getattr(new, "_requires_grad", False) else no_grad():
                t.copy_(new if isinstance(new, Tensor) else Tensor(new))
        else:
            new = new._data if isinstance(new, Tensor) else new
            np.copyto(t, new.get() if is_gpu_array(new) else new, casting="unsafe")


def set_grads(actions: Sequence[tuple], new_values: Sequence[Any]) -> None:
    """Set the `.grad`s a compiled call changed (see tracer/grad_slots.py): None, a new
    tensor holding the next of `new_values`, or another tensor of the user's."""
    it = iter(new_values)
    for t, kind, obj in actions:
        if kind == "new":
            new = next(it)
            t._grad = new if isinstance(new, Tensor) else Tensor(new)
        else:
            t._grad = obj


def settle_escapes(escaped: Sequence[Tensor], values: Sequence[Any]) -> None:
    """Tensors made inside the trace and stored outside it (see tracer/trace.py's
    find_escapes) become the eager tensors the eager call would have left there."""
    for t, v in zip(escaped, values):
        t._data = v._data if isinstance(v, Tensor) else v
        t._born_in = None
        t.grad_fn, t._out_idx, t._requires_grad = None, 0, False
        if isinstance(v, Tensor) and v._requires_grad:     # (an output of the call's tape node)
            t.grad_fn, t._out_idx, t._requires_grad = v.grad_fn, v._out_idx, True

