"""Module.state_dict / load_state_dict (torch's keys, values, errors and return value), kept
apart from module.py as a mixin of Module."""
from __future__ import annotations

from collections import OrderedDict, namedtuple
from collections.abc import Mapping

import numpy as np

from ..tracer.state import no_grad
from ..tracer.tensor import Tensor
from .parameter import Parameter


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    __slots__ = ()

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


class StateDictMixin:
    """Needs Module's tables: _parameters, _buffers, _non_persistent_buffers_set, _modules."""

    def state_dict(self, *args, destination: dict | None = None, prefix: str = "",
                   keep_vars: bool = False) -> "OrderedDict[str, Tensor]":
        """Parameters and persistent buffers by dotted name (tied weights under every name),
        detached unless keep_vars."""
        if args:        # torch's deprecated positional (destination, prefix, keep_vars)
            destination = args[0]
            if len(args) > 1:
                prefix = args[1]
            if len(args) > 2:
                keep_vars = args[2]
        if destination is None:
            destination = OrderedDict()
        for name, p in self._parameters.items():
            if p is not None:
                destination[prefix + name] = p if keep_vars else p.detach()
        for name, b in self._buffers.items():
            if b is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = b if keep_vars else b.detach()
        for name, m in self._modules.items():
            if m is not None:
                m.state_dict(destination=destination, prefix=prefix + name + ".",
                             keep_vars=keep_vars)
        return destination

    def load_state_dict(self, state_dict: Mapping, strict: bool = True,
                        assign: bool = False) -> _IncompatibleKeys:
        """Copy values (tracejit Tensors or NumPy arrays) into the parameters and buffers.
        Returns (missing_keys, unexpected_keys); with strict=True either is an error, and a
        shape mismatch always is."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
        missing: list[str] = []
        unexpected: list[str] = []
        errors: list[str] = []
        for prefix, mod in self.named_modules(prefix="", remove_duplicate=False):
            mod._load_local(state_dict, prefix + ("." if prefix else ""), assign,
                            missing, unexpected, errors)
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: {}. ".format(
                    ", ".join(f'"{k}"' for k in unexpected)))
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: {}. ".format(
                    ", ".join(f'"{k}"' for k in missing)))
        if errors:
            raise RuntimeError("Error(s) in loading state_dict for {}:\n\t{}".format(
                type(self).__name__, "\n\t".join(errors)))
        return _IncompatibleKeys(missing, unexpected)

    def _load_local(self, state_dict: Mapping, prefix: str, assign: bool, missing: list,
                    unexpected: list, errors: list) -> None:
        local = {k: v for k, v in self._parameters.items() if v is not None}
        local.update((k, v) for k, v in self._buffers.items()
                     if v is not None and k not in self._non_persistent_buffers_set)
        for name, param in local.items():
            key = prefix + name
            if key not in state_dict:
                missing.append(key)
                continue
            value = state_dict[key]
            if not isinstance(value, Tensor):
                try:
                    if not (isinstance(value, (np.ndarray, np.generic))
                            or hasattr(value, "__array__")):
                        raise TypeError("not an array")
                    value = Tensor(np.asarray(value))
                except (TypeError, ValueError, RuntimeError):
                    errors.append(f'While copying the parameter named "{key}", expected a '
                                  f'Tensor or NumPy array from checkpoint but received '
                                  f'{type(value)}')
                    continue
            if param.ndim == 0 and value.shape == (1,):
                value = value.reshape(())
            if tuple(value.shape) != tuple(param.shape):
                errors.append(f"size mismatch for {key}: copying a param with shape "
                              f"{list(value.shape)} from checkpoint, the shape in current "
                              f"model is {list(param.shape)}.")
                continue
            try:
                with no_grad():
                    if assign:
                        if isinstance(param, Parameter):
                            value = Parameter(value.detach(), param.requires_grad)
                        setattr(self, name, value)
                    else:
                        if value.device != param.device:
                            value = value.to(param.device)
                        param.copy_(value)
            except Exception as ex:  # noqa: BLE001  (reported with the others, as torch)
                errors.append(f'While copying the parameter named "{key}", whose dimensions in '
                              f'the model are {list(param.shape)} and whose dimensions in the '
                              f'checkpoint are {list(value.shape)}, an exception occurred : '
                              f'{ex.args}.')
        for key in state_dict.keys():
            if not isinstance(key, str) or not key.startswith(prefix):
                continue
            parts = key[len(prefix):].split(".", 1)
            if len(parts) > 1:
                if parts[0] not in self._modules:
                    unexpected.append(key)
            elif parts[0] not in local:
                unexpected.append(key)
