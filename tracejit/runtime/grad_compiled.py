"""`tj.grad` / `tj.value_and_grad` of a compiled function: a CompiledFunction whose trace is
the reverse-mode IR transform of the base function's (grad_trace.py), falling back to tracing
the eager engine's gradient where the transform cannot see (custom Functions, no_grad)."""
from __future__ import annotations

import functools

from ..devices import CPU, Device
from ..tracer import functional
from ..tracer.function import TRACED_APPLIES
from ..tracer.state import STATE
from ..tracer.trace import Traced
from .compile import CompiledFunction
from .grad_trace import trace_grad


class GradCompiledFunction(CompiledFunction):
    """grad / value_and_grad of a compiled function, built by the reverse-mode IR transform."""

    _grad_mode_matters = False

    def __init__(self, base: CompiledFunction, kind: str, argnums, has_aux: bool) -> None:
        py = getattr(functional, kind)(base.fn, argnums, has_aux)
        functools.update_wrapper(py, base.fn)
        py.__name__ = f"{kind}_{base.name}"
        super().__init__(py, base.static_argnums, base.static_argnames, base.device,
                         backend=base.backend_name, mode=base.mode)
        self.base, self.kind, self.argnums, self.has_aux = base, kind, argnums, has_aux

    def _trace(self, args, kwargs, static, device: Device = CPU) -> Traced:
        applies, off = TRACED_APPLIES[0], STATE.grad_off
        traced = trace_grad(self.base.fn, args, kwargs, static, self.name, device, self.kind,
                            self.argnums, self.has_aux)
        if TRACED_APPLIES[0] != applies or STATE.grad_off != off:
            # custom Functions: the IR transform cannot see their backward staticmethods, nor
            # no_grad blocks; the eager engine's grad, traced like any function, can
            return super()._trace(args, kwargs, static, device)
        traced.grad_keyed = False           # (see _grad_mode_matters)
        return traced

