"""wrap_array writes TensorBase.__init__ out: it must make the very tensor Tensor(data) makes,
slot for slot, outside and inside a trace."""
import numpy as np

import tracejit as tj
from tracejit.tracer.tensor_base import TensorBase, wrap_array


def _slots(t) -> dict:
    names = [n for n in TensorBase.__slots__ if n != "__weakref__"]
    return {n: getattr(t, n, "<unset>") for n in names}


def test_same_slots_as_the_constructor():
    a = np.arange(6.0).reshape(2, 3)
    assert _slots(wrap_array(a)) == _slots(TensorBase(a))
    assert type(wrap_array(a)) is type(TensorBase(a)) is tj.Tensor


def test_same_slots_inside_a_trace():
    seen = {}

    def f(x):
        a = np.ones(3)
        w, t = wrap_array(a), TensorBase(a)
        seen["slots"] = (_slots(w), _slots(t))
        seen["born"] = (w._born_in, t._born_in)
        return x * 2

    tj.compile(f)(tj.tensor(np.ones(3)))
    w, t = seen["slots"]
    assert w == t
    assert seen["born"][0] is not None and seen["born"][0] is seen["born"][1]


def test_view_slot_is_set_on_every_tensor():
    """`_view` is None, not unset, on tensors that are no view and have none (its readers'
    getattr(t, "_view", None) is ~20x dearer on an unset slot); views and bases get records."""
    a = np.ones((2, 3))
    for t in (wrap_array(a), TensorBase(a), tj.tensor(a) * 2, tj.tensor(a).sum()):
        assert t._view is None
    base = tj.tensor(a, requires_grad=True) * 1
    v = base[:, 1:]
    assert base._view is not None and v._view is not None
    assert v._version is base._version
