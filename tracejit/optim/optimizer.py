"""`Optimizer`: torch.optim.Optimizer's bookkeeping (param groups with their defaults filled in,
per-parameter state, `zero_grad`, `state_dict`/`load_state_dict` in torch's layout) and the two
ways a step runs.

Eagerly, `step()` calls one compiled update per (device, dtype) group of parameters (see
fused.py): the group's parameters in one graph (on the host, in calls of at most 256 KiB of
parameters each), hyperparameters as runtime scalars, and the new values written back into the
parameters' and the state's own storage.

Inside an outer `tj.compile` trace (a whole training step compiled as one graph), `step()`
applies the same update function as traced ops on the captured parameters and state, and
writes the results with in-place copies, which the trace turns into graph outputs written back
after each call. Hyperparameters are then read from 0-d tensors that each param group keeps in
step with its dict entries (a `ParamGroup` notices `group["lr"] = ...`), so a new learning rate
reaches the compiled step without a retrace. Anything that changes the Python structure of the
step (new state entries that change the update's form, `load_state_dict`, `add_param_group`, a
flag such as `nesterov`) bumps a counter that the trace reads as a guard, so the next call traces
again instead of running a stale graph.
"""
from __future__ import annotations

import warnings
from collections import defaultdict
from copy import deepcopy
from itertools import chain
from typing import Any, Callable, Iterable

import numpy as np

from ..ir import dtypes as dt
from ..ir.core import user_location
from ..devices import is_host, to_device
from ..tracer.state import STATE, enable_grad, no_grad
from ..tracer.tensor import Tensor
from .fused import cache_info
from .state import OptimizerState


class _RequiredParameter:
    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


def _untraced(t: Tensor) -> Tensor:
    """Mark a tensor made while a trace is active as an outside tensor: traces read it as an
    input every call (a capture), never as a constant baked into the graph."""
    t._born_in = None
    return t


def host_scalar(value: Any, dtype: np.dtype) -> Tensor:
    return _untraced(Tensor(np.array(value, dtype=dtype)))


def zeros_like_param(p: Tensor) -> Tensor:
    """Fresh zeros with p's shape, dtype and device (optimizer state), never a trace constant."""
    z = np.zeros(p.shape, p.dtype.np)
    return _untraced(Tensor(z if is_host(p._data) else to_device(z, p.device)))


def _hyper_entry(v: Any) -> tuple[Tensor, bool]:
    if isinstance(v, Tensor):
        return v, False
    return host_scalar(as_float(v), np.float64), True


def as_float(x: Any) -> float:
    return float(x.item()) if isinstance(x, Tensor) else float(x)


class ParamGroup(dict):
    """A parameter group: a plain dict to its users (as in torch), which tells its optimizer
    when an entry changes (see the module doc)."""

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        owner = getattr(self, "_owner", None)
        if owner is not None:
            owner._group_changed(self, key)

    def update(self, *args, **kwargs) -> None:        # type: ignore[override]
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def __reduce_ex__(self, protocol):                # copies and pickles are plain dicts
        return (dict, (dict(self),))


class Optimizer:
    """Base class of tj.optim's optimizers (torch.optim.Optimizer's interface)."""

    # entries of a param group that a compiled step reads as runtime scalars (subclasses)
    runtime_keys: tuple[str, ...] = ("lr",)

    def __init__(self, params: Iterable, defaults: dict[str, Any]) -> None:
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"Tensors or dicts, but got {type(params).__name__}")
        self.defaults = defaults
        # bumped whenever a compiled whole step must trace again (see the module doc)
        self._structure = host_scalar(0, np.int64)
        self.state: defaultdict[Tensor, dict] = defaultdict(dict)    # (watched: __setattr__)
        self.param_groups: list[dict[str, Any]] = []
        self._used: dict = {}             # the compiled updates this optimizer has called
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    # -- param groups ----------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        else:
            params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        params = [p[1] if isinstance(p, tuple) else p for p in params]
        group = ParamGroup(param_group)
        group["params"] = params
        if names:
            if len(names) != len(params):
                raise ValueError("all optimizer params should be with/without names. Some param "
                                 "names are missing")
            group["param_names"] = names
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is "
                                f"{type(p).__module__}.{type(p).__name__}")
            if not self.defaults.get("differentiable", None) and not (p.is_leaf or
                                                                       p.retains_grad):
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            group.setdefault(name, default)
        if len(params) != len({id(p) for p in params}):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; in "
                          "future, this will cause an error; see "
                          "github.com/pytorch/pytorch/issues/40967 for more information",
                          stacklevel=3)
        seen: set[int] = set()
        for g in self.param_groups:
            seen.update(id(p) for p in g["params"])
            if ("param_names" in group) != ("param_names" in g):
                txt = "with names" if "param_names" in group else "without names"
                raise ValueError(f"all optimizer param groups should be with/without names. "
                                 f"cannot add param group {txt} to the optimizer")
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self._adopt(group)
        self.param_groups.append(group)
        self._restructured()

    def _adopt(self, group: ParamGroup) -> None:
        group._signature = self._signature(group)
        group._hyper = {}
        group._owner = self

    def _signature(self, group: dict) -> tuple:
        """What of a group shapes the update's graph (subclasses: flags, zero or not)."""
        return ()

    def _group_changed(self, group: ParamGroup, key) -> None:
        hyper = group.__dict__.get("_hyper")
        replaced = self._sync_hyper(group, hyper) if hyper else False
        if key in self.runtime_keys and not replaced and \
                self._signature(group) == group._signature:
            return
        group._signature = self._signature(group)
        self._restructured()

    def _restructured(self) -> None:
        self._structure._data[...] += 1

    def _state_changed(self) -> None:
        """The state mapping changed (state.py). Outside a trace, the user's doing (a reset,
        a loaded or replaced entry): retrace. The optimizer's own lazy state made inside a
        trace is read as captures from then on; where it changes the update's form, the
        step says so itself (SGD's first momentum buffer)."""
        if not STATE.traces:
            self._restructured()

    def __setattr__(self, name: str, value: Any) -> None:
        # `opt.state = defaultdict(dict)` (a reset) or a new param_groups list: the next
        # compiled step traces again; the state is kept as a watched mapping (state.py)
        if name == "state" and (type(value) is not OptimizerState or
                                value._changed != self._state_changed):    # (another's)
            value = OptimizerState(self._state_changed, value)
        object.__setattr__(self, name, value)
        if name in ("state", "param_groups") and "_structure" in self.__dict__:
            self._restructured()

    # -- hyperparameters as runtime values -------------------------------------------------------
    def _hyper_values(self, group: dict) -> dict[str, Any]:
        """The group's runtime scalars by name (floats, or Tensors the user gave)."""
        return {"lr": group["lr"]}

    def _sync_hyper(self, group: dict, hyper: dict[str, tuple[Tensor, bool]]) -> bool:
        """Write the group's values into its runtime-scalar tensors (entries: the tensor, and
        whether it is the optimizer's own); True if one had to be replaced (the user put a
        Tensor into the group, or a float in place of one)."""
        replaced = False
        for k, v in self._hyper_values(group).items():
            if k not in hyper:
                continue
            t, own = hyper[k]
            if t is v:
                continue
            if own and not isinstance(v, Tensor):
                t._data[...] = as_float(v)
            else:
                hyper[k] = _hyper_entry(v)
                replaced = True
        return replaced

    def hyper(self, group: dict) -> dict[str, Any]:
        """Runtime scalars for one update: Python floats eagerly (a compiled call takes them as
        weak 0-d inputs); inside a trace, 0-d tensors kept in step with the group."""
        values = self._hyper_values(group)
        if not STATE.traces:
            return {k: as_float(v) for k, v in values.items()}
        hyper = group.__dict__.setdefault("_hyper", {})
        for k, v in values.items():
            if k not in hyper:
                hyper[k] = _hyper_entry(v)
        return {k: hyper[k][0] for k in values}

    # -- stepping --------------------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None):
        """One optimization step; `closure` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        self._opt_called = True
        with no_grad():
            if STATE.traces:
                # the trace depends on the optimizer's Python structure: guard on it
                self._structure.item()
            for group in self.param_groups:
                params = [p for p in group["params"] if p.grad is not None]
                if params:
                    self._step_group(group, params)
        return loss

    def _step_group(self, group: dict, params: list[Tensor]) -> None:
        raise NotImplementedError

    def cache_info(self):
        """Hits, misses and entries of the compiled updates this optimizer has called (they are
        shared by optimizers whose updates have the same form; `tj.clear_cache()` resets them)."""
        return cache_info(self._used.values())

    @staticmethod
    def by_device_dtype(params: list[Tensor]) -> list[list[Tensor]]:
        """Parameters split by (device, dtype), in first-seen order: one fused update each."""
        parts: dict[tuple, list[Tensor]] = {}
        for p in params:
            if p.grad.shape != p.shape:
                raise RuntimeError(f"optimizer step: a gradient of shape {list(p.grad.shape)} "
                                   f"for a parameter of shape {list(p.shape)} "
                                   f"(at {user_location()})")
            parts.setdefault((str(p.device), p.dtype), []).append(p)
        return list(parts.values())

    # -- gradients -------------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    # assigned without being read: a compiled step that starts with
                    # zero_grad() then does not depend on what .grad held (one trace)
                    p.grad = None
                elif p.grad is not None:
                    g = p.grad
                    if g.grad_fn is not None:
                        g.detach_()
                    else:
                        g.requires_grad_(False)
                    g.zero_()

    # -- state dicts -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """{'state': {param index: {name: value}}, 'param_groups': [{..., 'params': [indices]}]}
        as torch: the state's tensors are the optimizer's own (not copies)."""
        index: dict[int, int] = {}
        start = 0

        def pack(group: dict) -> dict:
            nonlocal start
            packed = {k: v for k, v in group.items() if k != "params"}
            index.update({id(p): i for i, p in enumerate(group["params"], start)
                          if id(p) not in index})
            packed["params"] = [index[id(p)] for p in group["params"]]
            start += len(packed["params"])
            return packed

        groups = [pack(g) for g in self.param_groups]
        # (plain dicts holding the optimizer's own tensors)
        state = {(index[id(k)] if isinstance(k, Tensor) else k):
                 dict(v) if isinstance(v, dict) else v for k, v in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = self.param_groups
        saved = deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match "
                             "the size of optimizer's group")
        id_map = dict(zip(chain.from_iterable(g["params"] for g in saved),
                          chain.from_iterable(g["params"] for g in groups)))
        state: defaultdict[Any, dict] = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k in id_map:
                p = id_map[k]
                state[p] = {name: _state_value(p, value, name) for name, value in v.items()}
            else:
                state[k] = v
        new_groups = []
        for g, s in zip(groups, saved):
            s["params"] = g["params"]
            if "param_names" in g and "param_names" not in s:
                s["param_names"] = g["param_names"]
            s = ParamGroup(s)
            self._fix_loaded_group(s)
            self._adopt(s)
            new_groups.append(s)
        self.state = state
        self.param_groups = new_groups
        self._restructured()

    def _fix_loaded_group(self, group: dict) -> None:
        """Fill entries an older state dict may lack (subclasses: torch's __setstate__)."""

    def __getstate__(self) -> dict[str, Any]:
        return {"defaults": self.defaults, "state": self.state,
                "param_groups": self.param_groups}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._structure = host_scalar(0, np.int64)
        self.state = self.__dict__["state"]     # watched again (state.py)
        self._used = {}
        groups = [ParamGroup(g) for g in self.param_groups]
        for g in groups:
            self._fix_loaded_group(g)
            self._adopt(g)
        self.param_groups = groups

    def __repr__(self) -> str:
        s = self.__class__.__name__ + " ("
        for i, group in enumerate(self.param_groups):
            s += f"\nParameter Group {i}\n"
            for key in sorted(group.keys()):
                if key != "params":
                    s += f"    {key}: {group[key]}\n"
        return s + ")"


def _state_value(p: Tensor, value: Any, name: str) -> Any:
    """A loaded state entry as the optimizer keeps it: tensors (also NumPy arrays, or other
    frameworks' tensors) become tracejit tensors on p's device, floating ones in p's dtype;
    'step' keeps its own dtype (as torch)."""
    if isinstance(value, dict):
        return {k: _state_value(p, v, k) for k, v in value.items()}
    if not isinstance(value, Tensor):
        if isinstance(value, (bool, int, float)) or value is None or \
                not hasattr(value, "__array__"):
            return value
        value = Tensor(np.array(value.detach().cpu().numpy() if hasattr(value, "detach")
                                else value, copy=True))
    arr = value._host("optimizer.load_state_dict")
    arr = np.array(arr, copy=True)
    if name != "step" and p.dtype.is_float:
        arr = arr.astype(p.dtype.np)
    elif dt.from_numpy(arr.dtype) is None:
        raise TypeError(f"optimizer.load_state_dict: state '{name}' has an unsupported dtype "
                        f"{arr.dtype}")
    if name != "step" and not is_host(p._data):
        arr = to_device(arr, p.device)
    return _untraced(Tensor(arr))
