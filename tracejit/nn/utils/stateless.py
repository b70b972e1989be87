"""`functional_call` (torch.func.functional_call, torch.nn.utils.stateless.functional_call):
run a module with some of its parameters and buffers replaced by given tensors, for the call
only.

The tensors are put straight into the module's tables (any Tensor, not only a Parameter: a
traced value, a handle of tj.grad or vmap) and the originals put back afterwards, even when
forward raises. Inside a trace each replaced name is first read as it is, so that the trace's
guard on the module's attribute (Module.__getattr__) holds the module's own tensor, which is
what the next call finds there, and the kept trace is reused."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

from ...tracer.state import STATE, bump_attr_epoch
from ...tracer.tensor import Tensor
from ..module import Module

__all__ = ["functional_call"]

_ABSENT = object()


def _merge(dicts: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if isinstance(dicts, Mapping):
        return dict(dicts)
    merged: dict[str, Any] = {}
    repeated = []
    for d in dicts:
        if not isinstance(d, Mapping):
            raise TypeError(f"functional_call: expected a dict or a tuple of dicts of tensors, "
                            f"got a {type(d).__name__} in the tuple")
        repeated += [k for k in d if k in merged]
        merged.update(d)
    if repeated:
        raise ValueError(f"{sorted(set(repeated))} appeared in multiple dictionaries; behavior "
                         f"of functional call is ambiguous")
    return merged


def _tied(module: Module, given: dict[str, Any]) -> dict[str, Any]:
    """given, extended to every other name of a tensor shared under several names."""
    names: dict[int, list[str]] = {}
    for n, t in [*module.named_parameters(remove_duplicate=False),
                 *module.named_buffers(remove_duplicate=False)]:
        names.setdefault(id(t), []).append(n)
    out = dict(given)
    for group in names.values():
        if len(group) < 2:
            continue
        chosen = [n for n in group if n in given]
        if len({id(given[n]) for n in chosen}) > 1:
            raise ValueError(f"functional_call got multiple values for keys {sorted(chosen)}, "
                             f"which are tied. Consider using tie_weights=False")
        if chosen:
            out.update({n: given[chosen[0]] for n in group if n not in given})
    return out


def _slot(module: Module, name: str) -> tuple[Module, str, str]:
    """(owning submodule, leaf name, table: "_parameters", "_buffers" or "" for a plain
    attribute) of a dotted name."""
    prefix, _, leaf = name.rpartition(".")
    try:
        owner = module.get_submodule(prefix) if prefix else module
    except AttributeError as e:
        raise AttributeError(f"functional_call: no submodule for '{name}': {e}") from None
    for table in ("_parameters", "_buffers"):
        if leaf in owner.__dict__[table]:
            return owner, leaf, table
    return owner, leaf, ""


@contextlib.contextmanager
def _swapped(module: Module, values: dict[str, Any]) -> Iterator[None]:
    slots = [(_slot(module, n), v) for n, v in values.items()]
    if STATE.traces:            # the guards record the module's own tensors (see the doc)
        for (owner, leaf, table), _ in slots:
            if table:
                getattr(owner, leaf)
    saved = []
    bump_attr_epoch()
    try:
        for (owner, leaf, table), v in slots:
            if table:
                t = owner.__dict__[table]
                saved.append((owner, leaf, table, t[leaf]))
                t[leaf] = v
            else:
                saved.append((owner, leaf, "", owner.__dict__.get(leaf, _ABSENT)))
                object.__setattr__(owner, leaf, v)
        yield
    finally:
        bump_attr_epoch()
        for owner, leaf, table, old in reversed(saved):
            if table:
                owner.__dict__[table][leaf] = old
            elif old is _ABSENT:
                owner.__dict__.pop(leaf, None)
            else:
                object.__setattr__(owner, leaf, old)


def functional_call(module: Module,
                    parameter_and_buffer_dicts: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                    args: Any = None, kwargs: dict[str, Any] | None = None, *,
                    tie_weights: bool = True, strict: bool = False) -> Any:
    """module(*args, **kwargs) with the named parameters and buffers replaced by the given
    tensors (a dict of dotted names, or a tuple of dicts). tie_weights: a value given for one
    name of a tied tensor replaces all its names. strict: every parameter and buffer must be
    given, and no other name."""
    if not isinstance(module, Module):
        raise TypeError(f"functional_call: expected an nn.Module, got {type(module).__name__}")
    given = _merge(parameter_and_buffer_dicts)
    for k, v in given.items():
        if not isinstance(k, str):
            raise TypeError(f"functional_call: the keys must be strings, got {k!r}")
        if v is not None and not isinstance(v, Tensor):
            raise TypeError(f"functional_call: the value for '{k}' must be a Tensor, got "
                            f"{type(v).__name__}")
    if tie_weights:
        given = _tied(module, given)
    if strict:
        own = {n for n, _ in [*module.named_parameters(remove_duplicate=False),
                              *module.named_buffers(remove_duplicate=False)]}
        missing, unexpected = sorted(own - set(given)), sorted(set(given) - own)
        if missing or unexpected:
            parts = ([f"Unexpected key(s): {', '.join(map(repr, unexpected))}."]
                     if unexpected else []) + \
                ([f"Missing key(s): {', '.join(map(repr, missing))}."] if missing else [])
            raise RuntimeError(f"Error(s) in reparametrizing for {type(module).__name__}:\n\t"
                               + "\n\t".join(parts))
    if args is None:
        args = ()
    elif not isinstance(args, tuple):
        args = (args,)
    with _swapped(module, given):
        return module(*args, **(kwargs or {}))
