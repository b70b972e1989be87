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
