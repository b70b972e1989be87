"""`tracejit.func` (also `tj.func`): torch.func's names and argument conventions over
tracejit's transforms (tracejit/transforms.py), so that `from torch.func import ...` ports as
`from tracejit.func import ...`.

Where torch.func differs from tj's JAX-style transforms this module adapts: grad_and_value
returns (grad, value) (tj.value_and_grad: (value, grad)); vmap takes in_dims/out_dims;
jacrev/jacfwd take has_aux (then the Jacobian comes from the eager engine, row by row, and
aux alongside); vjp's vjp_fn takes cotangents shaped as the output, which may be a pytree;
jvp takes has_aux."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from . import transforms as _t
from .nn.utils.stateless import functional_call
from .tracer import functional as _functional
from .tracer import ops as _ops
from .tracer.autograd import grad as _autograd_grad
from .tracer.functional import _named
from .tracer.forward_ad import FWD
from .tracer.pytree import tree_flatten, tree_unflatten
from .tracer.state import STATE, internal_enable_grad
from .tracer.tensor import Tensor

__all__ = ["functional_call", "grad", "grad_and_value", "vmap", "jacrev", "jacfwd", "hessian",
           "vjp", "jvp", "linearize"]

def grad(func: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable:
    """torch.func.grad: the gradient of scalar func w.r.t. args[argnums]; (grad, aux) with
    has_aux."""
    return _t.grad(func, argnums, has_aux)


def grad_and_value(func: Callable, argnums: int | Sequence[int] = 0,
                   has_aux: bool = False) -> Callable:
    """torch.func.grad_and_value: (grad, value), or (grad, (value, aux)) with has_aux."""
    vg = _t.value_and_grad(func, argnums, has_aux)

    def wrapper(*args: Any, **kwargs: Any) -> tuple:
        value, g = vg(*args, **kwargs)
        return g, value
    return _named(wrapper, "grad_and_value", func)


def vmap(func: Callable, in_dims: Any = 0, out_dims: Any = 0, randomness: str = "error", *,
         chunk_size: int | None = None) -> Callable:
    """torch.func.vmap (tj.vmap with torch's argument names)."""
    return _t.vmap(func, randomness=randomness, chunk_size=chunk_size, in_dims=in_dims,
                   out_dims=out_dims)


def _detached(tree: Any, args: tuple) -> Any:
    """aux as torch.func returns it: not differentiated by the transform that computed it (cut
    from the transform's handles unless an outer transform or trace is recording)."""
    leaves, _ = tree_flatten(args)
    if STATE.traces or FWD.levels or any(isinstance(a, Tensor) and a.requires_grad
                                         for a in leaves):
        return tree
    flat, spec = tree_flatten(tree, leaf=lambda x: not isinstance(x, (tuple, list, dict)))
    return tree_unflatten(spec, [x.detach() if isinstance(x, Tensor) else x for x in flat])


def _jacobian_with_aux(func: Callable, argnums: int | Sequence[int]) -> Callable:
    """The Jacobian of func's first result by the eager engine, and its second result."""
    def wrapper(*args: Any) -> tuple:
        box: list = []

        def first(*a: Any) -> Any:
            res = func(*a)
            if not isinstance(res, tuple) or len(res) != 2:
                raise TypeError("jacrev/jacfwd(has_aux=True): the function must return a "
                                f"tuple (output, aux), got {type(res).__name__}")
            box.append(res[1])
            return res[0]
        jac = _functional.jacobian(first, argnums)(*args)
        return jac, _detached(box[-1], args)
    return _named(wrapper, "jacobian", func)


def jacrev(func: Callable, argnums: int | Sequence[int] = 0, *, has_aux: bool = False,
           chunk_size: int | None = None, _preallocate_and_copy: bool = False) -> Callable:
    """torch.func.jacrev: the Jacobian by reverse mode, shaped out.shape + arg.shape."""
    return _jacobian_with_aux(func, argnums) if has_aux else _t.jacrev(func, argnums)


def jacfwd(func: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False, *,
           randomness: str = "error") -> Callable:
    """torch.func.jacfwd: the Jacobian by forward mode."""
    return _jacobian_with_aux(func, argnums) if has_aux else _t.jacfwd(func, argnums)


def hessian(func: Callable, argnums: int | Sequence[int] = 0) -> Callable:
    """torch.func.hessian: jacfwd(jacrev(func))."""
    return _t.hessian(func, argnums)


def vjp(func: Callable, *primals: Any, has_aux: bool = False) -> tuple:
    """torch.func.vjp: (output, vjp_fn[, aux]); vjp_fn(cotangents), cotangents shaped as the
    output (a tensor or a pytree of them), returns a tuple with one gradient per primal."""
    nums = tuple(range(len(primals)))
    call_args, wrt, trees = _functional._prepare(primals, nums)
    with internal_enable_grad():
        res = func(*call_args)
    if has_aux and (not isinstance(res, tuple) or len(res) != 2):
        raise TypeError(f"vjp(has_aux=True): the function must return a tuple (output, aux), "
                        f"got {type(res).__name__}")
    out, aux = (res[0], res[1]) if has_aux else (res, None)
    outs, out_tree = tree_flatten(out)
    flat = [t for g in wrt for t in g]
    nested = any(t.grad_fn is not None for t in flat) or bool(FWD.levels) or bool(STATE.traces)

    def vjp_fn(cotangents: Any) -> tuple:
        cts, ct_tree = tree_flatten(cotangents)
        if ct_tree != out_tree:
            raise ValueError("vjp: Expected pytree structure of cotangents to be the same as "
                             "pytree structure of outputs to the function")
        pairs = [(o, c if isinstance(c, Tensor) else _ops.as_tensor(c))
                 for o, c in zip(outs, cts) if isinstance(o, Tensor) and o.requires_grad]
        for o, c in pairs:
            if tuple(c.shape) != tuple(o.shape):
                raise ValueError(f"vjp: the cotangent's shape {list(c.shape)} differs from the "
                                 f"output's {list(o.shape)}")
        gs = _autograd_grad([o for o, _ in pairs], flat, [c for _, c in pairs],
                            retain_graph=True, create_graph=nested, allow_unused=True) \
            if pairs else [None] * len(flat)
        gs = [g if g is not None else _functional._zeros(t) for g, t in zip(gs, flat)]
        it = iter(gs)
        return tuple(tree_unflatten(tree, [next(it) for _ in g]) for tree, g in zip(trees, wrt))

    shown = tree_unflatten(out_tree, [o if nested or not isinstance(o, Tensor) else o.detach()
                                      for o in outs])
    return (shown, vjp_fn, _detached(aux, primals)) if has_aux else (shown, vjp_fn)


def jvp(func: Callable, primals: Any, tangents: Any, *, strict: bool = False,
        has_aux: bool = False) -> tuple:
    """torch.func.jvp: (output, jvp_out[, aux])."""
    if not isinstance(primals, tuple) or not isinstance(tangents, tuple):
        raise TypeError("jvp: Expected primals and tangents to be tuples. E.g. jvp(f, (x,), "
                        "(t,))")
    if not has_aux:
        return _t.jvp(func, primals, tangents)
    (out, aux), (t_out, _) = _t.jvp(func, primals, tangents)
    return out, t_out, aux


def linearize(func: Callable, *primals: Any) -> tuple:
    """torch.func.linearize: (output, jvp_fn)."""
    return _t.linearize(func, *primals)
