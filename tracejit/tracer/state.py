"""Process-wide tracer state: grad mode, the stack of active traces, and the bookkeeping
`checkpoint` uses to find (and stand in for) the tensors its function reads."""
from __future__ import annotations

import functools
import threading


class _State(threading.local):
    def __init__(self) -> None:
        self.grad_enabled = True        # written only by set_grad_mode (see GRAD_OFF)
        self.traces: list = []          # active TraceContexts, innermost last
        # tensors that require grad read by ops while a checkpointed function runs (or None)
        self.reads: list | None = None
        # id(tensor) -> stand-in leaf while a checkpointed function is recomputed (or None)
        self.subst: dict | None = None
        self.inference = False          # inside tj.inference_mode()
        # the grad mode the user set inside inference_mode (enable_grad, set_grad_enabled):
        # what is_grad_enabled() says there, as torch; nothing records either way
        self.inference_grad = False
        # times grad mode was turned off: a compiled gradient built by the IR transform, which
        # cannot see grad mode, is traced by the eager engine instead if its function did
        self.grad_off = 0
        # grad mode is off by the user's choice (no_grad & co.), not by the tracer's own
        # bookkeeping (checkpoint's forward): ops traced then are stop_gradient barriers
        self.user_off = False
        # times the user turned grad mode on (enable_grad, set_grad_enabled(True)): a compiled
        # function whose trace did has results that depend on the caller's grad mode
        self.grad_on = 0


STATE = _State()

# How many traces, forward-AD levels, checkpoint recomputations (`substituting`), read
# recordings (`recording_reads`) and autocast regions are open, over all threads. While it is
# 0 no thread has one, and the eager fast paths skip reading them from the thread's state: a
# thread-local attribute read costs ~600 instructions, and a small op made several. When it
# is not 0 they read the thread's own state, as before (a mode open in another thread only
# costs this one those reads). Changed under a lock (a lost update could leave it at 0 while
# a mode is open); read without one.
SPECIAL_MODES = [0]
_MODES_LOCK = threading.Lock()


def special_mode(delta: int) -> None:
    """Count one special mode opened (+1) or closed (-1): see SPECIAL_MODES."""
    with _MODES_LOCK:
        SPECIAL_MODES[0] += delta

# Bumped whenever an attribute of a guarded object changes (nn.Module's parameters, buffers,
# submodules, flags): compiled calls re-read their attribute guards only after a bump. One
# counter for all threads: a module changed in one thread is stale in every other.
ATTR_EPOCH = [0]


def bump_attr_epoch() -> None:
    ATTR_EPOCH[0] += 1


# How many threads have grad mode off (no_grad, inference_mode, set_grad_enabled(False), the
# tracer's own no_grad). While it is 0 grad mode is on in every thread, and the eager fast
# paths take it as on without reading the thread's state (`not GRAD_OFF[0] or
# STATE.grad_enabled`: the thread-local read cost ~550 instructions per recorded op). Kept by
# set_grad_mode, the one writer of STATE.grad_enabled, under the lock; a thread that ends with
# grad mode off leaves it above 0, which only makes the others read their own state.
GRAD_OFF = [0]


def set_grad_mode(mode: bool) -> None:
    """Set this thread's grad mode (STATE.grad_enabled), counted in GRAD_OFF."""
    mode = bool(mode)
    if STATE.grad_enabled != mode:
        with _MODES_LOCK:
            GRAD_OFF[0] += -1 if mode else 1
    STATE.grad_enabled = mode


def is_grad_enabled() -> bool:
    if STATE.inference:
        return STATE.grad_enabled or STATE.inference_grad
    return STATE.grad_enabled


def is_inference_mode_enabled() -> bool:
    return STATE.inference


def current_trace():
    return STATE.traces[-1] if STATE.traces else None


class _GradMode:
    """Context manager and decorator setting grad mode (PyTorch's no_grad/enable_grad)."""

    mode = True

    user = True         # a user's grad mode (see _State.user_off)

    def __enter__(self):
        self._prev = STATE.grad_enabled
        self._prev_user = STATE.user_off
        self._prev_shown = STATE.inference_grad
        if self.mode and self.user:
            STATE.grad_on += 1
        if self.user and STATE.inference:
            STATE.inference_grad = self.mode
        if self.mode and STATE.inference:
            return          # inference_mode records nothing, enable_grad or not (as torch)
        set_grad_mode(self.mode)
        if not self.mode:
            STATE.grad_off += 1
            # (the tracer's own no_grad inside the user's keeps it the user's: barriers)
            STATE.user_off = self.user or (not self._prev and self._prev_user)

    def __exit__(self, *exc):
        set_grad_mode(self._prev)
        STATE.user_off = self._prev_user
        STATE.inference_grad = self._prev_shown
        return False

    def _fresh(self) -> "_GradMode":
        return type(self)()

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            with self._fresh():
                return fn(*a, **k)
        return wrapper


class no_grad(_GradMode):
    mode = False


class internal_no_grad(no_grad):
    """no_grad for the tracer's own bookkeeping (checkpoint's forward, whose gradient flows
    through its recomputation): ops traced inside are not stop_gradient barriers."""

    user = False


class enable_grad(_GradMode):
    mode = True


class internal_enable_grad(enable_grad):
    """enable_grad for the tracer's own work (a function transform computing its gradient):
    not a user's grad mode, so a compiled function using it does not depend on the caller's."""

    user = False


class set_grad_enabled(_GradMode):
    """As PyTorch: `set_grad_enabled(False)` called on its own sets the mode at once; used as a
    context manager it restores the previous mode on exit; as a decorator it sets the mode only
    while the decorated function runs."""

    def __init__(self, mode: bool) -> None:
        self.mode = bool(mode)
        self._prev = STATE.grad_enabled
        self._prev_user = STATE.user_off
        self._prev_shown = STATE.inference_grad
        if self.mode and self.user:
            STATE.grad_on += 1
        self.__enter__()

    def __enter__(self):
        if self.user and STATE.inference:
            STATE.inference_grad = self.mode
        if self.mode and self.user and STATE.inference:
            return          # (as enable_grad; the engine's own passes are not subject to it)
        set_grad_mode(self.mode)
        if not self.mode:
            STATE.grad_off += 1
            STATE.user_off = True

    def _fresh(self) -> "_GradMode":
        return set_grad_enabled(self.mode)

    def __call__(self, fn):
        set_grad_mode(self._prev)             # decorating must not change the mode now
        STATE.user_off = self._prev_user
        STATE.inference_grad = self._prev_shown
        return super().__call__(fn)


class engine_grad_mode(set_grad_enabled):
    """set_grad_enabled for the autograd engine's own passes (create_graph): not a user's
    grad mode, so a compiled function running a backward does not depend on the caller's
    (STATE.grad_on), and not subject to inference_mode."""

    user = False

    def _fresh(self) -> "_GradMode":
        return engine_grad_mode(self.mode)


class inference_mode(_GradMode):
    """PyTorch's inference_mode: no_grad for a block or a function (tensors made inside do
    not require grad). `inference_mode(False)` changes nothing; `@inference_mode` works with
    or without the parentheses, as in PyTorch."""

    def __new__(cls, mode=True):
        if callable(mode) and not isinstance(mode, (bool, int)):
            return cls()(mode)                # @inference_mode on a function, bare
        return super().__new__(cls)

    def __init__(self, mode: bool = True) -> None:
        self.enabled = bool(mode)

    def __enter__(self):
        self._prev = STATE.grad_enabled, STATE.inference, STATE.user_off, STATE.inference_grad
        if self.enabled:
            set_grad_mode(False)
            STATE.inference, STATE.inference_grad = True, False
            STATE.grad_off += 1
            STATE.user_off = True

    def __exit__(self, *exc):
        grad, STATE.inference, STATE.user_off, STATE.inference_grad = self._prev
        set_grad_mode(grad)
        return False

    def _fresh(self) -> "inference_mode":
        return inference_mode(self.enabled)


def note_reads(tensors) -> None:
    """Record the tensors that require grad among `tensors`, if a checkpoint is listening."""
    reads = STATE.reads
    if reads is not None:
        reads.extend(t for t in tensors if t is not None and t._requires_grad)


class recording_reads:
    """Collect (into `.tensors`) the tensors needing grad that ops read inside the block; an
    enclosing recording also sees them."""

    def __enter__(self) -> "recording_reads":
        special_mode(1)
        self._outer = STATE.reads
        self.tensors: list = []
        STATE.reads = self.tensors
        return self

    def __exit__(self, *exc) -> bool:
        STATE.reads = self._outer
        special_mode(-1)
        if self._outer is not None:
            self._outer.extend(self.tensors)
        return False


class substituting:
    """While active, ops read `mapping[id(t)]` in place of tensor t (checkpoint recomputation
    uses it to give the tensors it differentiates fresh leaves of their own)."""

    def __init__(self, mapping: dict) -> None:
        self.mapping = mapping

    def __enter__(self) -> "substituting":
        special_mode(1)
        self._outer = STATE.subst
        STATE.subst = {**self._outer, **self.mapping} if self._outer else self.mapping
        return self

    def __exit__(self, *exc) -> bool:
        STATE.subst = self._outer
        special_mode(-1)
        return False
