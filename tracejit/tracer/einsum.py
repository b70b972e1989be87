"""`einsum`, PyTorch's spelling and semantics, lowered onto existing primitives.

Each operand first loses its repeated subscripts (a diagonal: a gather of the flattened
repeated dims at positions i * (1 + n + n^2 + ...), taken from iota) and the subscripts no
other operand and not the output mention (a sum). The operands are then contracted left to
right, two at a time: the subscripts both share and something later needs are batch dims, the
ones only they share are contracted, and the pair becomes one batched matmul between two
permute+reshapes (or a broadcast multiply when nothing is contracted, which fuses). A last
sum and permute give the output's order. Dims of size 1 broadcast against the same
subscript's size elsewhere, as torch does; `...` stands for broadcast dims aligned from the
right. Without `->` the output is `...` followed by the subscripts used once, sorted.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

from ..ir.primitives import P, bind
from . import ops
from .selection import positions
from .tensor_base import TensorBase as Tensor

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _err(msg: str) -> Exception:
    return ops._err("einsum", msg, ValueError)


def _parse_term(term: str, what: str) -> list:
    """Letters and at most one '...' (kept as the marker Ellipsis)."""
    out, i = [], 0
    while i < len(term):
        if term.startswith("...", i):
            if Ellipsis in out:
                raise _err(f"{what} '{term}' has more than one ellipsis")
            out.append(Ellipsis)
            i += 3
        elif term[i] in _LETTERS:
            out.append(term[i])
            i += 1
        else:
            raise _err(f"invalid subscript {term[i]!r} in {what} '{term}': subscripts are "
                       f"letters a-z, A-Z and '...'")
    return out


def _sublist_equation(args: Sequence) -> tuple[str, list]:
    """torch.einsum(op1, [0, 1], op2, [1, 2], [0, 2]): the sublist form, as an equation."""
    def term(sub) -> str:
        s = ""
        for v in sub:
            if v is Ellipsis:
                s += "..."
            elif isinstance(v, numbers.Integral) and 0 <= v < len(_LETTERS):
                s += _LETTERS[v]
            else:
                raise _err(f"sublist subscripts must be ints in [0, 52) or Ellipsis, got {v!r}")
        return s
    out = term(args[-1]) if len(args) % 2 else None     # an odd count ends with the output
    pairs = args[:-1] if len(args) % 2 else args
    operands, terms = list(pairs[0::2]), [term(s) for s in pairs[1::2]]
    return ",".join(terms) + ("" if out is None else "->" + out), operands


def einsum(*args) -> Tensor:
    """einsum('ij,jk->ik', a, b), einsum('bij,bjk', [a, b]), or the sublist form."""
    if not args:
        raise _err("needs an equation and operands")
    if isinstance(args[0], str):
        equation, operands = args[0], list(args[1:])
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = list(operands[0])
    else:
        equation, operands = _sublist_equation(args)
    if not operands:
        raise _err("must specify at least one operand")
    like = next((x for x in operands if isinstance(x, Tensor) and x._traced), None)
    d = ops.result_dtype(*operands)
    xs = [ops.as_tensor(x, d, like) for x in operands]
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(xs):
        raise _err(f"equation '{equation}' has {len(terms)} operand subscripts but "
                   f"{len(xs)} operands were given")
    labels = [_expand(_parse_term(t, "operand subscripts"), x, i)
              for i, (t, x) in enumerate(zip(terms, xs))]
    n_ell = max((sum(1 for lb in ls if isinstance(lb, int)) for ls in labels), default=0)
    ell = list(range(n_ell - 1, -1, -1))          # ellipsis dims, counted from the right
    if arrow:
        out_terms = _parse_term(rhs, "output subscripts")
        for lb in out_terms:
            if lb is not Ellipsis and out_terms.count(lb) > 1:
                raise _err(f"output subscript {lb} appears more than once in '{equation}'")
            if lb is not Ellipsis and not any(lb in ls for ls in labels):
                raise _err(f"output subscript {lb} does not appear in the operands of "
                           f"'{equation}'")
        out = [v for lb in out_terms for v in (ell if lb is Ellipsis else [lb])]
    else:
        counts: dict = {}
        for ls in labels:
            for lb in ls:
                if isinstance(lb, str):
                    counts[lb] = counts.get(lb, 0) + 1
        out = ell + sorted(lb for lb, c in counts.items() if c == 1)
    for x, ls in zip(xs, labels):
        for lb in dict.fromkeys(ls):
            dims = [x.shape[i] for i, v in enumerate(ls) if v == lb]
            if len(set(dims)) > 1:
                raise _err(f"subscript {lb} is repeated in operand {ops._fmt(x)} of "
                           f"'{equation}' with sizes {dims}, which must be equal")
    sizes = _label_sizes(labels, xs, equation)
    items = [_diagonal(x, ls) for x, ls in zip(xs, labels)]
    for i in range(len(items)):                 # sum what nobody else needs
        others = set(out).union(*(items[j][1] for j in range(len(items)) if j != i))
        items[i] = _sum_out(*items[i], others)
    x, ls = items[0]
    for k in range(1, len(items)):
        keep = set(out).union(*(items[j][1] for j in range(k + 1, len(items))))
        x, ls = _contract(x, ls, *items[k], keep, sizes)
    x, ls = _sum_out(x, ls, set(out))
    x = ops.broadcast_to(x, tuple(sizes[lb] for lb in ls))
    return ops.permute(x, tuple(ls.index(lb) for lb in out)) if ls != out else x


def _expand(term: list, x: Tensor, i: int) -> list:
    """The operand's subscripts with '...' replaced by ints (ellipsis dims from the right)."""
    n_letters = sum(1 for lb in term if lb is not Ellipsis)
    if Ellipsis not in term:
        if n_letters != x.ndim:
            raise _err(f"operand {i} {ops._fmt(x)} has {x.ndim} dims but {n_letters} "
                       f"subscripts")
        return term
    n = x.ndim - n_letters
    if n < 0:
        raise _err(f"operand {i} {ops._fmt(x)} has fewer dims than its {n_letters} subscripts")
    at = term.index(Ellipsis)
    return term[:at] + list(range(n - 1, -1, -1)) + term[at + 1:]


def _label_sizes(labels, xs, equation: str) -> dict:
    sizes: dict = {}
    for ls, x in zip(labels, xs):
        for lb, n in zip(ls, x.shape):
            m = sizes.get(lb, 1)
            if m != n and 1 not in (m, n):
                what = f"subscript {lb}" if isinstance(lb, str) else "the ellipsis dims"
                raise _err(f"{what} has sizes {m} and {n} in '{equation}' (operands "
                           f"{', '.join(ops._fmt(t) for t in xs)}), which do not broadcast")
            sizes[lb] = n if m == 1 else m
    return sizes


def _diagonal(x: Tensor, ls: list) -> tuple[Tensor, list]:
    """Collapse each subscript repeated within one operand to its diagonal."""
    for lb in dict.fromkeys(ls):
        where = [i for i, v in enumerate(ls) if v == lb]
        if len(where) < 2:
            continue
        n = x.shape[where[0]]
        rest = [i for i in range(x.ndim) if i not in where]
        x = ops.permute(x, tuple(rest + where))
        x = ops.reshape(x, tuple(x.shape[:len(rest)]) + (n ** len(where),))
        stride = sum(n ** k for k in range(len(where)))
        idx = ops.mul(positions(x, (n,), 0), stride)
        x = bind(P.gather, x, idx, axis=len(rest))
        ls = [ls[i] for i in rest] + [lb]
    return x, ls


def _sum_out(x: Tensor, ls: list, needed: set) -> tuple[Tensor, list]:
    axes = tuple(i for i, lb in enumerate(ls) if lb not in needed)
    if not axes:
        return x, ls
    return ops.sum(x, axes), [lb for lb in ls if lb in needed]


def _contract(a: Tensor, la: list, b: Tensor, lb: list, keep: set, sizes: dict):
    both = [v for v in la if v in lb]
    batch = [v for v in both if v in keep]
    summed = [v for v in both if v not in keep]
    left = [v for v in la if v not in lb]
    right = [v for v in lb if v not in la]

    def arrange(x, ls, order, widen):
        """x permuted to `order` and broadcast to the full sizes of the subscripts in widen."""
        x = ops.permute(x, tuple(ls.index(v) for v in order)) if order != ls else x
        return ops.broadcast_to(x, tuple(sizes[v] if v in widen else x.shape[i]
                                         for i, v in enumerate(order)))
    bsz = [sizes[v] for v in batch]
    if not summed:      # nothing to contract: a broadcast multiply, which fusion absorbs
        lsz, rsz = _sizes_of(a, la, left), _sizes_of(b, lb, right)
        a = ops.reshape(arrange(a, la, batch + left, set(batch)),
                        tuple(bsz) + lsz + (1,) * len(right))
        b = ops.reshape(arrange(b, lb, batch + right, set(batch)),
                        tuple(bsz) + (1,) * len(left) + rsz)
        return ops.mul(a, b), batch + left + right
    widen = set(batch) | set(summed)
    a = arrange(a, la, batch + left + summed, widen)
    b = arrange(b, lb, batch + summed + right, widen)
    nb, nl = len(batch), len(left)
    ls_, rs_ = a.shape[nb:nb + nl], b.shape[nb + len(summed):]
    k = math.prod(sizes[v] for v in summed)
    a = ops.reshape(a, (math.prod(bsz), math.prod(ls_), k))
    b = ops.reshape(b, (math.prod(bsz), k, math.prod(rs_)))
    out = ops.matmul(a, b)
    return ops.reshape(out, tuple(bsz) + tuple(ls_) + tuple(rs_)), batch + left + right


def _sizes_of(x: Tensor, ls: list, which: list) -> tuple[int, ...]:
    return tuple(x.shape[ls.index(v)] for v in which)
