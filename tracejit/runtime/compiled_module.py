"""`tj.compile(module)`: a module called as one compiled function, everything else forwarded
to the module."""
from __future__ import annotations

from typing import Any, Callable

from .entry import Lowered


class CompiledModule:
    """What `tj.compile(module)` returns (torch's OptimizedModule): calling it runs the module
    (its hooks, then forward) as a compiled function. Parameters and buffers are captures, read
    afresh by each call, so `loss.backward()` on its result runs the compiled backward and fills
    their `.grad`; modules guard their traces on their train/eval modes. Everything else is the
    module's own: attributes read and set, `train()`/`eval()`, `parameters()`, `state_dict()`
    (the same keys as the module's, without torch's `_orig_mod.` prefix)."""

    def __init__(self, module, compile_call: Callable[[Callable], Any]) -> None:
        """`compile_call` compiles a function with the options given to tj.compile (a
        CompiledFunction factory from runtime.compile, which imports this module, not the
        other way round)."""
        def call(*args, **kwargs):
            return module(*args, **kwargs)
        call.__name__ = call.__qualname__ = type(module).__name__
        call.__wrapped__ = module       # (whose forward's globals a trace guards)
        d = self.__dict__
        d["_orig_mod"] = d["__wrapped__"] = module
        d["_compiled"] = compile_call(call)

    def __call__(self, *args, **kwargs):
        return self._compiled(*args, **kwargs)

    forward = __call__

    def lower(self, *args, **kwargs) -> Lowered:
        return self._compiled.lower(*args, **kwargs)

    def cache_info(self) -> tuple:
        return self._compiled.cache_info()

    def clear_cache(self) -> None:
        self._compiled.clear_cache()

    def __getattr__(self, name: str):
        mod = self.__dict__["_orig_mod"]
        if name == "module" and not hasattr(mod, "module"):
            return mod
        return getattr(mod, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._orig_mod, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._orig_mod, name)

    def __dir__(self):
        return sorted(set(dir(self._orig_mod)) | set(dir(type(self))))

    def __repr__(self) -> str:
        return f"CompiledModule({self._orig_mod!r})"
