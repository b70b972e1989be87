"""`.grad` of captured tensors inside a trace (a whole training step compiled as one graph).

Inside a trace, `loss.backward()` runs the eager engine on traced tensors, so its VJP rules emit
the backward pass into the same graph (the mechanism `tj.grad` uses inside a trace). A captured
tensor that requires grad is read through a traced leaf that shares its AccumulateGrad node, so
the engine accumulates into the capture's own `.grad` slot, exactly as eagerly: None -> the new
gradient, an existing `.grad` -> updated in place. Code later in the trace (clip_grad_norm_, an
optimizer) reads the traced gradient from the slot.

The slot must not keep a traced value after the trace: `GradSlots` notes each captured slot
before its first change, and at the end of the trace puts the original object back and turns
the final state into an action applied after every call of the compiled function:
  - unchanged (an existing `.grad` updated in place is an ordinary write of a capture): nothing;
  - None (`zero_grad(set_to_none=True)`): `.grad = None`;
  - a traced value or a constant: an extra graph output, set as a new Tensor (what eager leaves);
  - another outside tensor (`p.grad = q`): that same object.
What the trace assumed of each slot (None, or a tensor; the very tensor if its value was read)
is a guard: a call that finds it otherwise traces again. A slot the trace overwrote before
anything saw what it held (`zero_grad(set_to_none=True)` first, then `backward()`) has no guard:
the trace is the same whether it was None or a tensor, so the usual loop traces once.
"""
from __future__ import annotations

from typing import Any

from ..ir.core import Value

NONE, NEW, ALIAS = "none", "new", "alias"


class GradSlots:
    def __init__(self) -> None:
        self._orig: dict[int, tuple[Any, Any]] = {}    # id(t) -> (t, its .grad before the trace)
        self._seen: set[int] = set()       # slots whose original content the trace looked at
        self._set: set[int] = set()        # slots assigned in the trace

    def note(self, t, observe: bool = True) -> None:
        """`t`'s `.grad` is read (observe) or about to be assigned without being read (not
        observe): remember what it was, and whether the trace saw that."""
        if id(t) not in self._orig:
            self._orig[id(t)] = (t, t._grad)
        if observe and id(t) not in self._set:
            self._seen.add(id(t))

    def assigned(self, t) -> None:
        """`t`'s `.grad` now holds a value set in the trace (after `note`)."""
        self._set.add(id(t))

    def restore(self) -> None:
        """Put every noted slot back as it was (the trace failed)."""
        for t, orig in self._orig.values():
            t._grad = orig

    def finish(self, ctx) -> tuple[list, list, list[Value]]:
        """Restore the slots; return (guards, actions, extra graph outputs), see the module doc."""
        guards, actions, outs = [], [], []
        for t, orig in self._orig.values():
            final = t._grad
            t._grad = orig
            read = orig is not None and id(orig) in ctx.read_ids()
            # overwritten unseen: the action below does not depend on what the slot held
            free = id(t) in self._set and id(t) not in self._seen and not read
            if not free:
                guards.append((t, orig, read))
                if final is orig:
                    continue
            if final is None:
                actions.append((t, NONE, None))
            elif not final._traced and final._born_in is not ctx:
                actions.append((t, ALIAS, final))
            else:
                outs.append(final._data if final._traced else ctx.capture(final))
                actions.append((t, NEW, None))
        return guards, actions, outs


def slot_guards_changed(guards: list) -> str | None:
    """Why the `.grad` slots no longer look as the trace assumed, or None."""
    for t, orig, read in guards:
        g = t._grad
        if (g is None) != (orig is None) or (read and g is not orig):
            was = "None" if orig is None else "a tensor"
            now = "None" if g is None else ("another tensor" if read else "a tensor")
            return f"the .grad of a captured {t.dtype.name}{list(t.shape)} tensor was {was} " \
                   f"when traced and is {now} now"
    return None
