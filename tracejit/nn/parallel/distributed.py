"""`DistributedDataParallel`: torch.nn.parallel.DistributedDataParallel's semantics.

At construction every rank checks that all ranks hold the same parameters (names, shapes,
dtypes: a clear error naming the ranks otherwise), then rank 0's parameters and buffers are
broadcast to all. Each forward broadcasts the buffers again (broadcast_buffers=True) and arms
the reducer (reducer.py), which averages the gradients over ranks during backward. Under
`no_sync()` gradients only accumulate locally; the first backward after it averages the
accumulated `.grad`."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

from ...distributed import collectives as C
from ...distributed.base import DistError
from ...distributed.group import resolve
from ...tracer.inplace import store
from ...tracer.state import STATE, is_grad_enabled, no_grad
from ...tracer.tensor import Tensor
from ...runtime.compiled_module import CompiledModule
from ..module import Module
from .reducer import Reducer


def _coalesced_broadcast(tensors: list, pg: Any) -> None:
    """Broadcast tensors from pg's rank 0, one collective per dtype and device."""
    groups: dict[tuple, list] = {}
    for t in tensors:
        groups.setdefault((t.dtype.name, str(t.device)), []).append(t)
    for _, ts in sorted(groups.items(), key=lambda kv: kv[0]):
        if STATE.traces or (len(ts) == 1 and ts[0]._data.flags.c_contiguous):
            # inside a compiled function each one is an operation of the graph, written back
            # into the tensor after every call (a concatenation here would be a constant)
            for t in ts:
                C.broadcast(t, group=pg, group_src=0)
            continue
        flat = Tensor(np.concatenate([t._data.reshape(-1) for t in ts]))   # NumPy or CuPy
        C.broadcast(flat, group=pg, group_src=0)
        off = 0
        for t in ts:
            n = t.numel()
            # as an in-place op: a parameter that is a view writes through to its base
            store(t, flat._data[off:off + n].reshape(t.shape), "DistributedDataParallel")
            off += n


class DistributedDataParallel(Module):
    def __init__(self, module: Module, device_ids: Any = None, output_device: Any = None,
                 dim: int = 0, broadcast_buffers: bool = True, process_group: Any = None,
                 bucket_cap_mb: float | None = 25, find_unused_parameters: bool = False,
                 check_reduction: bool = False, gradient_as_bucket_view: bool = False,
                 static_graph: bool = False, init_sync: bool = True) -> None:
        super().__init__()
        compiled = None
        if isinstance(module, CompiledModule):    # DDP(tj.compile(model)): call it compiled
            compiled, module = module, module._orig_mod
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps an nn.Module, got "
                            f"{type(module).__name__}")
        pg = resolve(process_group, "DistributedDataParallel")
        if pg is None:
            raise ValueError("DistributedDataParallel: this rank is not a member of "
                             "process_group (new_group() left it out)")
        self.module = module
        self.__dict__["_compiled_module"] = compiled
        self.process_group = pg
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        self.require_backward_grad_sync = True
        cap = 25 if bucket_cap_mb is None else bucket_cap_mb
        if not cap > 0:
            raise ValueError(f"bucket_cap_mb must be positive, got {bucket_cap_mb}")
        self.bucket_bytes_cap = int(cap * 1024 * 1024)
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self._check_same_parameters(pg, module)
        if init_sync:
            with no_grad():
                _coalesced_broadcast([p for _, p in module.named_parameters()] +
                                     [b for _, b in module.named_buffers()], pg)
        self.gradient_as_bucket_view = gradient_as_bucket_view
        self.__dict__["reducer"] = Reducer(named, pg, self.bucket_bytes_cap,
                                           find_unused_parameters, gradient_as_bucket_view)

    @staticmethod
    def _check_same_parameters(pg: Any, module: Module) -> None:
        """Every rank gets the same error if any two ranks' models differ."""
        mine = [(n, tuple(p.shape), p.dtype.name) for n, p in module.named_parameters()] + \
               [("buffer " + n, tuple(b.shape), b.dtype.name) for n, b in module.named_buffers()]
        if pg.size == 1:
            return
        allsigs = pg.backend.all_gather_object(mine, "DistributedDataParallel's parameter check")
        for r, sig in enumerate(allsigs):
            if sig == allsigs[0]:
                continue
            if len(sig) != len(allsigs[0]):
                raise DistError(
                    f"DistributedDataParallel: ranks hold different models: rank 0 has "
                    f"{len(allsigs[0])} parameters and buffers, rank {r} has {len(sig)}")
            for (n0, s0, d0), (n1, s1, d1) in zip(allsigs[0], sig):
                if (n0, s0, d0) != (n1, s1, d1):
                    raise DistError(
                        f"DistributedDataParallel: ranks hold different models: rank 0 has "
                        f"{n0}: {d0}{list(s0)}, rank {r} has {n1}: {d1}{list(s1)}")

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        if self.broadcast_buffers and self.process_group.size > 1:
            bufs = [b for _, b in self.module.named_buffers()]
            if bufs:
                with no_grad():
                    _coalesced_broadcast(bufs, self.process_group)
        if is_grad_enabled() and self.require_backward_grad_sync:
            self.reducer.prepare()
        # a forward traced into a compiled function arms the reducer only while tracing: its
        # backward must be traced too (a compiled training step), see Reducer._hook
        self.reducer.traced_forward = bool(STATE.traces)
        run = self.__dict__["_compiled_module"] or self.module
        return run(*inputs, **kwargs)

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Compile the wrapped module (DDP's own forward, which arms the gradient reduction,
        stays eager): the same as `ddp.module.compile(...)`."""
        self.module.compile(*args, **kwargs)

    def __tj_compile__(self, **kwargs: Any) -> "DistributedDataParallel":
        """`tj.compile(ddp)` (torch.compile(DDP(model))'s spelling): compiles the wrapped
        module, as ddp.compile(), and returns this DDP (a compiled DDP forward would arm the
        reduction only while tracing)."""
        self.compile(**kwargs)
        return self

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Gradients of backward passes inside accumulate locally, without communication."""
        old = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = old

    def __getstate__(self) -> dict:
        raise TypeError("DistributedDataParallel cannot be pickled or copied; save "
                        "ddp.module.state_dict() instead")
