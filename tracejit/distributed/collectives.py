"""The collectives, in PyTorch's names, in place on tensors: validate the arguments (a clear
error naming the op, the shapes and dtypes, and the caller's file:line), pick the backend from
where the tensor lives and the group it runs on (`group=`: the default one, or one from
`new_group`), check that every rank issues the same collective (sigcheck.py), and return a
Work (async_op=True) or wait for it."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..devices import is_gpu_array
from ..tracer.inplace import store
from ..tracer.ops import stack
from ..tracer.state import STATE
from ..tracer.tensor import Tensor
from ..tracer.view_writes import follow_writes
from ..tracer.views import ViewOf
from .dispatch import (backend_for, check_op, check_tensor, contiguous, describe, op_err,
                       start)
from .base import DistError, ReduceOp, Work
from .group import resolve
from .traced import traced_all_reduce, traced_broadcast


def _in_trace(t: Any) -> bool:
    """Inside a function being traced (a traced value, an outside tensor it reads, or a
    constant it made) the collective becomes an operation of the compiled graph: it runs at
    every call, not once while tracing."""
    return isinstance(t, Tensor) and bool(STATE.traces)


def _group_src(pg: Any, op: str, src: int, group_src: int | None) -> int:
    """The source's rank within pg: `group_src` is one already; `src`, as in PyTorch, is a
    rank of the default group."""
    if group_src is not None:
        if not 0 <= int(group_src) < pg.size:
            raise op_err(op, f"group_src={group_src} is not a rank of a group of {pg.size}")
        return int(group_src)
    if int(src) not in pg.ranks:
        raise op_err(op, f"src={src} is not a rank of the group of ranks {pg.ranks}"
                     if pg.gid else f"src={src} is not a rank of a world of {pg.size}")
    return pg.ranks.index(int(src))


def _finish(work: Work, async_op: bool) -> Work | None:
    if async_op:
        return work
    work.wait()
    return None


def _in_place(t: Tensor, work_fn) -> Work:
    """Run the collective on t's memory when it is t's own contiguous array; otherwise (a
    view, whose array is a read-only alias of its base's memory; a non-contiguous tensor) on
    a contiguous copy, stored into t when it completes as an in-place op stores its result
    (tracer.inplace.store: version counter, write-through to the base, views follow)."""
    rec = getattr(t, "_view", None)
    arr, copy_back = contiguous(t._data)
    if type(rec) is ViewOf and not copy_back:
        arr, copy_back = arr.copy(), True
    work = work_fn(arr)
    if copy_back:
        work.add_finisher(lambda: store(t, arr, "collective"))
        return work
    t._version[0] += 1
    if rec is not None:             # a base: its views follow its new value
        work.add_finisher(lambda: follow_writes(t))
    return work


def all_reduce(tensor: Tensor, op: ReduceOp = ReduceOp.SUM, group: Any = None,
               async_op: bool = False) -> Work | None:
    pg = resolve(group, "all_reduce")
    if pg is None:
        return None
    if _in_trace(tensor):
        traced_all_reduce(tensor, check_op("all_reduce", op, tensor), pg)
        return None
    t = check_tensor("all_reduce", tensor)
    op = check_op("all_reduce", op, t)
    be = backend_for(pg, "all_reduce", [t._data])
    desc = start(pg, "all_reduce", f"({describe(t)}, op={op.name})")
    return _finish(_in_place(t, lambda a: be.all_reduce(a, op, desc)), async_op)


def broadcast(tensor: Tensor, src: int = 0, group: Any = None, async_op: bool = False,
              group_src: int | None = None) -> Work | None:
    pg = resolve(group, "broadcast")
    if pg is None:
        return None
    src = _group_src(pg, "broadcast", src, group_src)
    if _in_trace(tensor):
        traced_broadcast(tensor, src, pg)
        return None
    t = check_tensor("broadcast", tensor)
    be = backend_for(pg, "broadcast", [t._data])
    desc = start(pg, "broadcast", f"({describe(t)}, src={src})")
    return _finish(_in_place(t, lambda a: be.broadcast(a, int(src), desc)), async_op)


def all_gather_into_tensor(output_tensor: Tensor, input_tensor: Tensor, group: Any = None,
                           async_op: bool = False) -> Work | None:
    out = check_tensor("all_gather_into_tensor", output_tensor, "output_tensor")
    inp = check_tensor("all_gather_into_tensor", input_tensor, "input_tensor")
    pg = resolve(group, "all_gather_into_tensor")
    if pg is None:
        return None
    if out.dtype != inp.dtype or out.numel() != pg.size * inp.numel():
        raise op_err("all_gather_into_tensor", f"output_tensor {describe(out)} must have the "
                   f"dtype of input_tensor {describe(inp)} and world_size ({pg.size}) times "
                   f"its number of elements")
    be = backend_for(pg, "all_gather_into_tensor", [out._data, inp._data])
    desc = start(pg, "all_gather_into_tensor", f"({describe(inp)} -> {describe(out)})")
    src, _ = contiguous(inp._data)
    return _finish(_in_place(out, lambda a: be.all_gather(a, src, desc)), async_op)


def all_gather(tensor_list: list, tensor: Tensor, group: Any = None,
               async_op: bool = False) -> Work | None:
    t = check_tensor("all_gather", tensor)
    pg = resolve(group, "all_gather")
    if pg is None:
        return None
    if not isinstance(tensor_list, (list, tuple)) or len(tensor_list) != pg.size:
        raise op_err("all_gather", f"tensor_list must be a list of world_size ({pg.size}) "
                   f"tensors, got {type(tensor_list).__name__} of "
                   f"{len(tensor_list) if hasattr(tensor_list, '__len__') else '?'}")
    for i, o in enumerate(tensor_list):
        check_tensor("all_gather", o, f"tensor_list[{i}]")
        if o.shape != t.shape or o.dtype != t.dtype:
            raise op_err("all_gather", f"tensor_list[{i}] is {describe(o)}, but tensor is "
                       f"{describe(t)}: every entry must match it")
    be = backend_for(pg, "all_gather", [t._data] + [o._data for o in tensor_list])
    desc = start(pg, "all_gather", f"({describe(t)})")
    xp = type(t._data) if is_gpu_array(t._data) else None
    src, _ = contiguous(t._data)
    if xp is None:
        stacked = np.empty((pg.size,) + t.shape, t._data.dtype)
    else:
        import cupy
        stacked = cupy.empty((pg.size,) + t.shape, t._data.dtype)
    work = be.all_gather(stacked, src, desc)
    for i, o in enumerate(tensor_list):
        work.add_finisher(lambda i=i, o=o: store(o, stacked[i], "all_gather"))
    return _finish(work, async_op)


def reduce_scatter_tensor(output: Tensor, input: Tensor, op: ReduceOp = ReduceOp.SUM,  # noqa: A002
                          group: Any = None, async_op: bool = False) -> Work | None:
    out = check_tensor("reduce_scatter_tensor", output, "output")
    inp = check_tensor("reduce_scatter_tensor", input, "input")
    op = check_op("reduce_scatter_tensor", op, inp)
    pg = resolve(group, "reduce_scatter_tensor")
    if pg is None:
        return None
    if out.dtype != inp.dtype or inp.numel() != pg.size * out.numel():
        raise op_err("reduce_scatter_tensor", f"input {describe(inp)} must have the dtype of "
                   f"output {describe(out)} and world_size ({pg.size}) times its number of "
                   f"elements")
    be = backend_for(pg, "reduce_scatter_tensor", [out._data, inp._data])
    desc = start(pg, "reduce_scatter_tensor",
                  f"({describe(inp)} -> {describe(out)}, op={op.name})")
    src, _ = contiguous(inp._data)
    return _finish(_in_place(out, lambda a: be.reduce_scatter(a, src, op, desc)), async_op)


def reduce_scatter(output: Tensor, input_list: list, op: ReduceOp = ReduceOp.SUM,
                   group: Any = None, async_op: bool = False) -> Work | None:
    """output = the reduction over ranks of input_list[rank]."""
    pg = resolve(group, "reduce_scatter")
    if pg is None:
        return None
    if not isinstance(input_list, (list, tuple)) or len(input_list) != pg.size:
        raise op_err("reduce_scatter", f"input_list must hold world_size ({pg.size}) tensors")
    for i, x in enumerate(input_list):
        check_tensor("reduce_scatter", x, f"input_list[{i}]")
        if x.shape != output.shape or x.dtype != output.dtype:
            raise op_err("reduce_scatter", f"input_list[{i}] is {describe(x)}, output is "
                       f"{describe(output)}: they must match")
    return reduce_scatter_tensor(output, stack([x.detach() for x in input_list]), op,
                                 group, async_op)


def barrier(group: Any = None, async_op: bool = False, device_ids: Any = None) -> Work | None:
    pg = resolve(group, "barrier")
    if pg is None:
        return None
    desc = start(pg, "barrier", "()")
    return _finish(pg.backend.barrier(desc), async_op)


def broadcast_object_list(object_list: list, src: int = 0, group: Any = None,
                          device: Any = None, group_src: int | None = None) -> None:
    """Replace object_list's entries on every rank by src's (pickled; small objects only)."""
    pg = resolve(group, "broadcast_object_list")
    if pg is None:
        return None
    if not isinstance(object_list, list):
        raise op_err("broadcast_object_list", "object_list must be a list", TypeError)
    src = _group_src(pg, "broadcast_object_list", src, group_src)
    desc = start(pg, "broadcast_object_list", f"(len={len(object_list)}, src={src})")
    objs = pg.backend.broadcast_object(list(object_list), int(src), desc)
    if len(objs) != len(object_list):
        raise DistError(f"tracejit.distributed.broadcast_object_list: rank {pg.rank} passed a "
                        f"list of {len(object_list)} objects, rank {src} sent {len(objs)}")
    object_list[:] = objs


def all_gather_object(object_list: list, obj: Any, group: Any = None) -> None:
    pg = resolve(group, "all_gather_object")
    if pg is None:
        return None
    if not isinstance(object_list, list) or len(object_list) != pg.size:
        raise op_err("all_gather_object", f"object_list must be a list of world_size "
                   f"({pg.size}) entries")
    desc = start(pg, "all_gather_object", "()")
    object_list[:] = pg.backend.all_gather_object(obj, desc)
