"""JAX-style function transforms: grad, value_and_grad, vjp, jacobian, hessian.

They run the eager engine (which also works on traced tensors, so inside @tj.compile they
emit IR). They know nothing of compiled functions: the public tj.grad & co.
(tracejit/transforms.py) hand a compiled function to the runtime, which compiles its transform."""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np

from ..ir.core import user_location
from ..ir.primitives import zeros_like
from . import forward_ad, jacobians, ops
from .forward import _argnums
from .forward_ad import FWD
from .autograd import grad as autograd_grad
from .backward_nodes import AliasNode
from .pytree import tree_flatten, tree_unflatten
from .state import STATE, internal_enable_grad, internal_no_grad
from .tensor_base import TensorBase as Tensor, lift


def _fresh(x) -> Tensor:
    """A differentiable handle on leaf `x` for one transform."""
    if not isinstance(x, Tensor):
        x = ops.as_tensor(x)
        if not x.dtype.is_float:
            raise TypeError(f"grad: differentiated arguments must be floating point, got "
                            f"{x.dtype.name} (at {user_location()})")
    x = lift(x)                     # inside a trace, a capture is an input, not a constant
    if not x.dtype.is_float:
        raise TypeError(f"grad: differentiated arguments must be floating point, got "
                        f"{x.dtype.name}{list(x.shape)} (at {user_location()})")
    t = Tensor(x._data)
    if x._requires_grad:            # nested transform: stay connected to the outer graph
        t.grad_fn, t._requires_grad = AliasNode([x]), True
    else:
        t._requires_grad = True
    if FWD.levels:                  # a dual tensor (forward_ad): the handle keeps its tangents
        forward_ad.carry_over(x, t)
    return t


def _prepare(args, argnums, writes: list | None = None):
    """The arguments with differentiable handles in argnums. With `writes` (a list), inside a
    trace: (argument, handle, its value) for each tensor argument, for _write_back."""
    args = list(args)
    wrt, trees = [], []
    for i in argnums:
        leaves, tree = tree_flatten(args[i])
        fresh = [_fresh(l) for l in leaves]
        if writes is not None and STATE.traces:
            writes += [(l, t, t._data) for l, t in zip(leaves, fresh) if isinstance(l, Tensor)]
        wrt.append(fresh)
        trees.append(tree)
        args[i] = tree_unflatten(tree, fresh)
    return args, wrt, trees


def _write_back(writes: list) -> None:
    """A handle written in place (through its .detach(), as torch.func allows) writes into its
    argument: eagerly they share the array; in a trace the handle holds a new value."""
    for arg, t, before in writes:
        if t._data is not before:
            with internal_no_grad():
                arg.copy_(t.detach())


def _scalar_out(out, name: str) -> Tensor:
    if not isinstance(out, Tensor):
        raise TypeError(f"{name}: the function must return a scalar Tensor, got "
                        f"{type(out).__name__} (use has_aux=True to return (loss, aux))")
    if out.numel() != 1 or not out.dtype.is_float:
        raise TypeError(f"{name}: the function must return a scalar float Tensor, got "
                        f"{out.dtype.name}{list(out.shape)}")
    return out


def _zeros(t: Tensor) -> Tensor:
    """The gradient with respect to an argument the result does not depend on: zeros of its
    shape, dtype and device (not t * 0, which is NaN where t is inf or NaN)."""
    return zeros_like(t.detach())


def _grads(out: Tensor, wrt, trees, ct=None):
    flat = [t for group in wrt for t in group]
    # dual tensors: the backward ops run on Tensors and are recorded, so tangents flow through
    # traced: the backward ops stay differentiable (no no_grad barriers: tracer/no_grad_ir.py),
    # so a transform of the traced graph (jacrev, a compiled call's backward) differentiates it
    nested = any(t.grad_fn is not None for t in flat) or bool(FWD.levels) or \
        bool(STATE.traces)
    if not out._requires_grad:
        gs = [None] * len(flat)
    else:
        gs = autograd_grad([out], flat, None if ct is None else [ct], retain_graph=nested,
                           create_graph=nested, allow_unused=True)
    gs = [g if g is not None else _zeros(t) for g, t in zip(gs, flat)]
    it = iter(gs)
    return [tree_unflatten(tree, [next(it) for _ in group]) for tree, group in zip(trees, wrt)]


def _named(wrapper: Callable, kind: str, fn: Callable) -> Callable:
    """`kind_fn`, as the transform of a compiled function is named: tj.compile(tj.grad(f))
    then names its graph grad_f, not f."""
    name = getattr(fn, "__name__", "f")
    wrapper.__name__ = f"{kind}_{name}"
    wrapper.__qualname__ = f"{kind}_{getattr(fn, '__qualname__', name)}"
    return wrapper


def value_and_grad(fn: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False):
    """fn(*args) -> ((value[, aux]), grads) where grads match argnums' structure."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        nums = _argnums(argnums, len(args), "grad")
        writes: list = []
        call_args, wrt, trees = _prepare(args, nums, writes)
        with internal_enable_grad():
            res = fn(*call_args, **kwargs)
        out, aux = (res[0], res[1]) if has_aux else (res, None)
        out = _scalar_out(out, "grad")
        gs = _grads(out, wrt, trees)
        _write_back(writes)
        gs = gs[0] if isinstance(argnums, int) else tuple(gs)
        value = out if any(t.grad_fn is not None for g in wrt for t in g) else out.detach()
        return ((value, aux) if has_aux else value), gs
    return _named(wrapper, "value_and_grad", fn)


def grad(fn: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False):
    """The gradient of scalar-valued fn with respect to the arguments in argnums."""
    vg = value_and_grad(fn, argnums, has_aux)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        res, gs = vg(*args, **kwargs)
        return (gs, res[1]) if has_aux else gs
    return _named(wrapper, "grad", fn)


def vjp(fn: Callable, *primals, has_aux: bool = False):
    """(fn(*primals), vjp_fn) where vjp_fn(cotangent) returns one gradient per primal."""
    nums = tuple(range(len(primals)))
    call_args, wrt, trees = _prepare(primals, nums)
    with internal_enable_grad():
        res = fn(*call_args)
    out, aux = (res[0], res[1]) if has_aux else (res, None)

    def vjp_fn(ct):
        ct = ct if isinstance(ct, Tensor) else ops.as_tensor(np.asarray(ct, out.dtype.np))
        return tuple(_grads(out, wrt, trees, ct))
    primal_out = out.detach() if not any(t.grad_fn is not None for g in wrt for t in g) else out
    return (primal_out, vjp_fn, aux) if has_aux else (primal_out, vjp_fn)


def _jacobian_of(out: Tensor, flat: list[Tensor], nested: bool) -> list[Tensor]:
    """d out / d t for each t in flat, shape out.shape + t.shape, one reverse pass per row."""
    rows: list[list[Tensor]] = [[] for _ in flat]
    n = out.numel()
    flat_out = ops.reshape(out, (n,)) if out._requires_grad else None
    for r in range(n):
        if flat_out is None:
            gs = [None] * len(flat)
        else:
            gs = autograd_grad([flat_out[r]], flat, retain_graph=True, create_graph=nested,
                               allow_unused=True)
        for j, (g, t) in enumerate(zip(gs, flat)):
            rows[j].append(g if g is not None else _zeros(t))
    return [ops.reshape(ops.stack(rs) if rs else
                        ops.as_tensor(np.zeros((0,) + t.shape, t.dtype.np), const=True),
                        out.shape + t.shape) for rs, t in zip(rows, flat)]


def jacobian(fn: Callable, argnums: int | Sequence[int] = 0):
    """d fn(*args) / d args[argnums]: shape out.shape + arg.shape (reverse mode, row by row).

    As JAX's jacrev, a pytree result gives the same pytree of Jacobians (hessian with several
    argnums is a tuple of tuples), each shaped like argnums' structure."""

    @functools.wraps(fn)
    def wrapper(*args):
        nums = _argnums(argnums, len(args), "jacobian")
        call_args, wrt, trees = _prepare(args, nums)
        flat = [t for g in wrt for t in g]
        with internal_enable_grad():
            outs, out_tree = tree_flatten(fn(*call_args))
        nested = any(t.grad_fn is not None for t in flat)
        per_out = []
        for out in outs:
            it = iter(_jacobian_of(ops.as_tensor(out), flat, nested))
            res = [tree_unflatten(tree, [next(it) for _ in g]) for tree, g in zip(trees, wrt)]
            per_out.append(res[0] if isinstance(argnums, int) else tuple(res))
        return tree_unflatten(out_tree, per_out)
    return _named(wrapper, "jacobian", fn)


def jacfwd(fn: Callable, argnums: int | Sequence[int] = 0):
    """The Jacobian by forward mode on vmap (see tracer/jacobians.py)."""
    return jacobians.jacfwd(fn, argnums)


def jacrev(fn: Callable, argnums: int | Sequence[int] = 0):
    """The Jacobian by reverse mode on vmap (see tracer/jacobians.py); `jacobian` is the same
    derivative by the eager engine, row by row, for functions that cannot be traced, and for
    those that apply custom Functions (their backward staticmethods run there)."""
    return jacobians.jacrev(fn, argnums, custom=jacobian(fn, argnums))


def hessian(fn: Callable, argnums: int | Sequence[int] = 0):
    """Forward over reverse, as JAX's: jacfwd(jacrev(fn)). The gradient is traced once and
    its linear part runs on the whole basis at once (reverse over reverse, row by row, ran
    the whole backward of the gradient once per element)."""
    return _named(jacfwd(jacrev(fn, argnums), argnums), "hessian", fn)
