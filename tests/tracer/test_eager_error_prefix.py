"""An eager index error names its op once (the implementation's message already starts with
the op's name, and the eager path used to prefix it again: "take_along: take_along: ...")."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.ir import P, bind


def test_out_of_range_gather_names_the_op_once():
    x = tj.tensor(np.arange(12.0).reshape(3, 4))
    idx = tj.tensor(np.array([0, 7, 1]))
    with pytest.raises(IndexError) as e:
        bind(P.take_along, x, idx, axis=1)        # the primitive applied eagerly
    msg = str(e.value)
    assert msg.startswith("take_along: ") and "take_along: take_along" not in msg, msg
    assert "test_eager_error_prefix" in msg
