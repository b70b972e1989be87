"""`tracejit.autograd.functional`: torch.autograd.functional's jacobian, hessian, vjp, jvp,
hvp and vhp, with torch's signatures and result structures (a Tensor for a Tensor, tuples for
tuples, a tuple of tuples for tuple inputs and outputs), on the eager autograd engine.

As torch does, jvp and hvp use the double-backward trick (the VJP is linear in its
cotangent, so differentiating it with respect to the cotangent gives the JVP); create_graph
keeps the results differentiable; strict raises where an output does not depend on an input;
vectorize and the strategies are accepted (the Jacobian is computed row by row either way)."""
from __future__ import annotations

from typing import Any, Callable

from ..tracer import ops
from ..tracer.autograd import grad as _grad
from ..tracer.creation import ones_like, zeros_like
from ..tracer.state import enable_grad
from ..tracer.tensor import Tensor

__all__ = ["jacobian", "hessian", "vjp", "jvp", "hvp", "vhp"]


def _tuple(x: Any, what: str, fn: str) -> tuple[bool, tuple]:
    is_tuple = isinstance(x, (tuple, list))
    xs = tuple(x) if is_tuple else (x,)
    for i, t in enumerate(xs):
        if not isinstance(t, Tensor):
            raise TypeError(f"The {what} given to {fn} must be either a Tensor or a tuple of "
                            f"Tensors but the value at index {i} has type {type(t).__name__}.")
    return is_tuple, xs


def _leaves(xs: tuple, create_graph: bool) -> tuple:
    """Differentiable handles on the inputs (connected to their graph under create_graph)."""
    return tuple(x.view_as(x) if create_graph and x.requires_grad
                 else x.detach().requires_grad_(True) for x in xs)


def _outputs(func: Callable, leaves: tuple, fn: str) -> tuple[bool, tuple]:
    with enable_grad():
        out = func(*leaves)
    return _tuple(out, "outputs of the user-provided function", fn)


def _grads(outs, leaves, cts, create_graph: bool, strict: bool, what: str) -> list:
    live = [(o, c) for o, c in zip(outs, cts) if o.requires_grad]
    gs = _grad([o for o, _ in live], list(leaves), [c for _, c in live], retain_graph=True,
               create_graph=create_graph, allow_unused=True) if live else [None] * len(leaves)
    res = []
    for i, (g, x) in enumerate(zip(gs, leaves)):
        if g is None:
            if strict:
                raise RuntimeError(f"The output of the user-provided function is independent "
                                   f"of input {i}. This is not allowed in strict mode{what}.")
            g = zeros_like(x.detach())
        res.append(g)
    return res


def _fin(xs, create_graph: bool) -> tuple:
    return tuple(x if create_graph else x.detach() for x in xs)


def _like(is_tuple: bool, xs: tuple) -> Any:
    return xs if is_tuple else xs[0]


def _vectors(v: Any, against: tuple, what: str, fn: str) -> tuple:
    """v checked against the tensors it pairs with; None allowed for one one-element tensor."""
    if v is None:
        if len(against) != 1 or against[0].numel() != 1:
            raise RuntimeError(f"The vector v can only be None if the {what} to the "
                               f"user-provided function is a single Tensor with a single "
                               f"element.")
        return (ones_like(against[0].detach()),)
    _, vs = _tuple(v, "v", fn)
    if len(vs) != len(against):
        raise RuntimeError(f"{fn}: v has {len(vs)} tensors, the {what} {len(against)}")
    for a, b in zip(vs, against):
        if tuple(a.shape) != tuple(b.shape):
            raise RuntimeError(f"Mismatch in shape: v has shape {list(a.shape)} but the {what} "
                               f"has shape {list(b.shape)} ({fn})")
    return vs


def vjp(func: Callable, inputs: Any, v: Any = None, create_graph: bool = False,
        strict: bool = False) -> tuple:
    """(func(inputs), v^T J): the vector-Jacobian product."""
    in_tuple, xs = _tuple(inputs, "inputs", "vjp")
    leaves = _leaves(xs, create_graph)
    out_tuple, outs = _outputs(func, leaves, "vjp")
    vs = _vectors(v, outs, "output", "vjp")
    gs = _grads(outs, leaves, vs, create_graph, strict, "")
    return _like(out_tuple, _fin(outs, create_graph)), _like(in_tuple, _fin(gs, create_graph))


def jvp(func: Callable, inputs: Any, v: Any = None, create_graph: bool = False,
        strict: bool = False) -> tuple:
    """(func(inputs), J v): the Jacobian-vector product."""
    in_tuple, xs = _tuple(inputs, "inputs", "jvp")
    vs = _vectors(v, xs, "input", "jvp")
    leaves = _leaves(xs, create_graph)
    out_tuple, outs = _outputs(func, leaves, "jvp")
    us = tuple(zeros_like(o.detach()).requires_grad_(True) for o in outs)
    gs = _grads(outs, leaves, us, True, strict, "")
    back = [(g, x) for g, x in zip(gs, vs) if g.requires_grad]
    res = _grad([g for g, _ in back], list(us), [x for _, x in back], retain_graph=True,
                create_graph=create_graph, allow_unused=True) if back else [None] * len(us)
    res = [r if r is not None else zeros_like(o.detach()) for r, o in zip(res, outs)]
    if strict and not back:
        raise RuntimeError("The output of the user-provided function is independent of the "
                           "inputs. This is not allowed in strict mode.")
    return _like(out_tuple, _fin(outs, create_graph)), _like(out_tuple, _fin(res, create_graph))


def jacobian(func: Callable, inputs: Any, create_graph: bool = False, strict: bool = False,
             vectorize: bool = False, strategy: str = "reverse-mode") -> Any:
    """d func / d inputs, each block shaped output.shape + input.shape: a Tensor, a tuple over
    the inputs, a tuple over the outputs, or a tuple (outputs) of tuples (inputs)."""
    if strategy not in ("forward-mode", "reverse-mode"):
        raise ValueError('Expected strategy to be either "forward-mode" or "reverse-mode". '
                         f'Hint: If your function has a single input and output, they are '
                         f'equivalent, got {strategy!r}')
    in_tuple, xs = _tuple(inputs, "inputs", "jacobian")
    leaves = _leaves(xs, create_graph)
    out_tuple, outs = _outputs(func, leaves, "jacobian")
    blocks = []
    for k, out in enumerate(outs):
        n = out.numel()
        rows: list[list[Tensor]] = [[] for _ in leaves]
        flat = ops.reshape(out, (n,))
        for r in range(n):
            if flat.requires_grad:
                gs = _grad([flat[r]], list(leaves), retain_graph=True,
                           create_graph=create_graph, allow_unused=True)
            else:
                gs = [None] * len(leaves)
            for j, (g, x) in enumerate(zip(gs, leaves)):
                if g is None:
                    if strict:
                        raise RuntimeError(f"Output {k} of the user-provided function is "
                                           f"independent of input {j}. This is not allowed in "
                                           f"strict mode.")
                    g = zeros_like(x.detach())
                rows[j].append(g)
        per_in = tuple(ops.reshape(ops.stack(rs), tuple(out.shape) + tuple(x.shape)) if rs
                       else zeros_like(x.detach()).reshape(tuple(out.shape) + tuple(x.shape))
                       for rs, x in zip(rows, leaves))
        blocks.append(_like(in_tuple, _fin(per_in, create_graph)))
    return _like(out_tuple, tuple(blocks))


def _scalar(func: Callable, fn: str) -> Callable:
    def f(*xs: Tensor) -> Tensor:
        out = func(*xs)
        if not isinstance(out, Tensor) or out.numel() != 1:
            shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise RuntimeError(f"The Tensor returned by the function given to {fn} should "
                               f"contain a single element, got {shape}")
        return out
    return f


def hessian(func: Callable, inputs: Any, create_graph: bool = False, strict: bool = False,
            vectorize: bool = False, outer_jacobian_strategy: str = "reverse-mode") -> Any:
    """The Hessian of a function returning one element: a Tensor (input.shape * 2), or for
    tuple inputs a tuple of tuples H[i][j]."""
    in_tuple, xs = _tuple(inputs, "inputs", "hessian")
    f = _scalar(func, "hessian")

    def gradient(*leaves: Tensor) -> tuple:
        out = f(*leaves)
        return tuple(_grads((out,), leaves, (ones_like(out.detach()),), True, strict,
                            " for hessian"))
    h = jacobian(gradient, xs, create_graph, strict, vectorize, outer_jacobian_strategy)
    return h if in_tuple else h[0][0]


def _hv(func: Callable, inputs: Any, v: Any, create_graph: bool, strict: bool,
        fn: str) -> tuple:
    in_tuple, xs = _tuple(inputs, "inputs", fn)
    vs = _vectors(v, xs, "input", fn)
    leaves = _leaves(xs, create_graph)
    with enable_grad():
        out = _scalar(func, fn)(*leaves)
    gs = _grads((out,), leaves, (ones_like(out.detach()),), True, strict, f" for {fn}")
    back = [(g, x) for g, x in zip(gs, vs) if g.requires_grad]
    if back:
        res = _grads([g for g, _ in back], leaves, [x for _, x in back], create_graph, strict,
                     f" for {fn}")
    elif strict:
        raise RuntimeError(f"The jacobian of the user-provided function is independent of the "
                           f"inputs. This is not allowed in strict mode for {fn}.")
    else:
        res = [zeros_like(x.detach()) for x in leaves]
    return _fin((out,), create_graph)[0], _like(in_tuple, _fin(res, create_graph))


def vhp(func: Callable, inputs: Any, v: Any = None, create_graph: bool = False,
        strict: bool = False) -> tuple:
    """(func(inputs), v^T H)."""
    return _hv(func, inputs, v, create_graph, strict, "vhp")


def hvp(func: Callable, inputs: Any, v: Any = None, create_graph: bool = False,
        strict: bool = False) -> tuple:
    """(func(inputs), H v) (H is symmetric, so this is vhp's product)."""
    return _hv(func, inputs, v, create_graph, strict, "hvp")
