"""The public function transforms `tj.grad`, `tj.value_and_grad`, `tj.jacobian`, `tj.hessian`.

They live above both the tracer and the runtime because they choose between the two: the
transform of a compiled function is itself a compiled function (the runtime builds `grad` and
`value_and_grad` from the reverse-mode IR transform), and the transform of any other function
runs the eager transforms of `tracer.functional`, which know nothing of compiled functions."""
from __future__ import annotations

from typing import Callable, Sequence

from .runtime.compile import CompiledFunction
from .runtime.grad_compiled import GradCompiledFunction
from .runtime import forward as runtime_forward
from .tracer import forward, functional
from .tracer import vmap as _vmap


def value_and_grad(fn: Callable, argnums: int | Sequence[int] = 0,
                   has_aux: bool = False) -> Callable:
    """fn(*args) -> ((value[, aux]), grads) where grads match argnums' structure."""
    if isinstance(fn, CompiledFunction):
        return GradCompiledFunction(fn, "value_and_grad", argnums, has_aux)
    return functional.value_and_grad(fn, argnums, has_aux)


def grad(fn: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable:
    """The gradient of scalar-valued fn with respect to the arguments in argnums."""
    if isinstance(fn, CompiledFunction):
        return GradCompiledFunction(fn, "grad", argnums, has_aux)
    return functional.grad(fn, argnums, has_aux)


def jacobian(fn: Callable, argnums: int | Sequence[int] = 0) -> Callable:
    """d fn(*args) / d args[argnums]: shape out.shape + arg.shape (reverse mode, row by row)."""
    if isinstance(fn, CompiledFunction):
        return fn.transform("jacobian", argnums=argnums)
    return functional.jacobian(fn, argnums)


def hessian(fn: Callable, argnums: int | Sequence[int] = 0) -> Callable:
    """The Jacobian of the gradient."""
    if isinstance(fn, CompiledFunction):
        return fn.transform("hessian", argnums=argnums)
    return functional.hessian(fn, argnums)


# -- forward mode -------------------------------------------------------------------------------
def jvp(fn: Callable, primals, tangents) -> tuple:
    """(fn(*primals), the derivative of fn at primals applied to tangents), as jax.jvp and
    torch.func.jvp. A compiled fn runs its compiled JVP graph (TRACEJIT_DUMP=jvp)."""
    if isinstance(fn, CompiledFunction):
        return runtime_forward.compiled_jvp(fn, primals, tangents)
    return forward.jvp(fn, primals, tangents)


def linearize(fn: Callable, *primals) -> tuple:
    """(fn(*primals), f_jvp): fn runs once; f_jvp(*tangents) runs only the linear part."""
    if isinstance(fn, CompiledFunction):
        return runtime_forward.compiled_linearize(fn, *primals)
    return forward.linearize(fn, *primals)


def jacfwd(fn: Callable, argnums: int | Sequence[int] = 0) -> Callable:
    """The Jacobian by forward mode, shaped out.shape + arg.shape (as jacrev)."""
    if isinstance(fn, CompiledFunction):
        return fn.transform("jacfwd", argnums=argnums)
    return functional.jacfwd(fn, argnums)


def jacrev(fn: Callable, argnums: int | Sequence[int] = 0) -> Callable:
    """The Jacobian by reverse mode, the backward pass run on the whole basis through vmap
    (tj.jacobian: the same by the eager engine, row by row, also for untraceable functions)."""
    if isinstance(fn, CompiledFunction):
        return fn.transform("jacrev", argnums=argnums)
    return functional.jacrev(fn, argnums)


# -- batching -----------------------------------------------------------------------------------
def vmap(fn: Callable, in_axes=0, out_axes=0, randomness: str = "error", *,
         chunk_size: int | None = None, in_dims=None, out_dims=None) -> Callable:
    """Map fn over an axis of its arguments (JAX's in_axes/out_axes, PyTorch's in_dims/out_dims,
    randomness and chunk_size): see tracer/vmap.py. The vmap of a compiled function is a
    compiled function of the batched graph."""
    if isinstance(fn, CompiledFunction):
        inner = _vmap.vmap(fn.fn, in_axes, out_axes, randomness, chunk_size=chunk_size,
                           in_dims=in_dims, out_dims=out_dims)
        return CompiledFunction(inner, fn.static_argnums, fn.static_argnames, fn.device,
                                backend=fn.backend_name, mode=fn.mode)
    return _vmap.vmap(fn, in_axes, out_axes, randomness, chunk_size=chunk_size,
                      in_dims=in_dims, out_dims=out_dims)
