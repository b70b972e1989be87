"""The autograd standing of aliases of a tensor's memory: detach() and .data (views.py
records them, of the kinds DETACH and DATA: no history of their base's), and views made
while their base required no gradient, after `base.requires_grad_()` (and, alike, views made
under no_grad of a base that requires grad: views.mark gives them this standing).

As torch's (a view's requires_grad is its base's), such a view then requires grad, yet has no
history of its own and is a leaf: the nodes of the ops that read it have no edge for it (its
`_accum` is backward_nodes.UNTRACKED), so it gets no gradient and its base none through it
(torch's edge (None, 0)). An in-place write to the base afterwards re-derives it from the base
with the base's history (view_writes.rederive), as torch regenerates a view's grad_fn then.
`base.requires_grad_(False)` takes it back; the view's own `requires_grad_(True)` makes it a
leaf of its own (its `.grad` fills), as torch's."""
from __future__ import annotations

import numpy as np

from .backward_nodes import UNTRACKED
from .tensor_base import TensorBase
from .views import DATA, DETACH, MULTI, VIEW, ViewOf, Views, mark


def detach(x: TensorBase) -> TensorBase:
    """x.detach(): shares x's data and version counter, and follows x's in-place updates."""
    rec = getattr(x, "_view", None)
    if type(rec) is ViewOf and type(x._data) is np.ndarray and not x._captured():
        # the view's array (a read-only view of its base's memory) is shared, not made x's
        # own by a copy (Tensor.detach's _own): x and its detached alias stay in that memory
        out = TensorBase(x._data)
    else:
        out = TensorBase.detach(x)      # (the plain detach)
    return mark(x, out, TensorBase.detach, DETACH)


def data_of(x: TensorBase) -> TensorBase:
    """x.data: shares x's data only (the setter, `x.data = y`, is tensor.Tensor's)."""
    out = x._detached_data()
    if getattr(out, "_data_of", None) is not None:
        out._view = None            # a capture's: written back by inplace.py's own path
    else:
        mark(x, out, lambda r: r.detach() if r._traced or r._captured()
             else TensorBase(r._data), DATA)
    return out


def requires_grad_(x: TensorBase, b: bool = True) -> TensorBase:
    """Tensor.requires_grad_: x's own flag; on a base, its live views without history follow
    it (see above)."""
    if x._accum is UNTRACKED:       # x is such a view
        if b:
            x._accum = None         # its own flag from now on: a leaf with an AccumulateGrad
        return x                    # (requires_grad_(False): its base's flag still holds)
    was = x._requires_grad
    TensorBase.requires_grad_(x, b)
    rec = getattr(x, "_view", None)
    if type(rec) is not Views or x._requires_grad == was:
        return x
    for ref in rec.refs:
        v = ref()
        if v is None or type(v._view) is not ViewOf or v._view.kind not in (VIEW, MULTI):
            continue                # (detach() and .data share memory, not the flag)
        if x._requires_grad and not v._requires_grad and v.grad_fn is None:
            v._requires_grad, v._accum = True, UNTRACKED
        elif not x._requires_grad and v._accum is UNTRACKED:
            v._requires_grad, v._accum = False, None
    return x
