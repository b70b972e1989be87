"""Process-wide tracer state: grad mode and the stack of active traces."""
from __future__ import annotations

import threading


class _State(threading.local):
    def __init__(self) -> None:
        self.grad_enabled = True
        self.traces: list = []          # active TraceContexts, innermost last


STATE = _State()


def is_grad_enabled() -> bool:
    return STATE.grad_enabled


def current_trace():
    return STATE.traces[-1] if STATE.traces else None


class _GradMode:
    """Context manager and decorator setting grad mode (PyTorch's no_grad/enable_grad)."""

    mode = True

    def __enter__(self):
        self._prev = STATE.grad_enabled
        STATE.grad_enabled = self.mode

    def __exit__(self, *exc):
        STATE.grad_enabled = self._prev
        return False

    def __call__(self, fn):
        import functools

        @functools.wraps(fn)
        def wrapper(*a, **k):
            with type(self)():
                return fn(*a, **k)
        return wrapper


class no_grad(_GradMode):
    mode = False


class enable_grad(_GradMode):
    mode = True


class set_grad_enabled(_GradMode):
    def __init__(self, mode: bool) -> None:
        self.mode = bool(mode)
