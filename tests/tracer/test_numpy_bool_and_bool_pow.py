"""torch reads a NumPy bool as a float number (int_t + np.bool_(True) is float32, a bool tensor
with it is no logical or) and keeps a bool tensor to a Python bool power bool: eagerly and as
compiled arguments, dtypes and values against torch."""
from __future__ import annotations

import operator

import numpy as np
import pytest
import torch

import tracejit as tj

DTYPES = ["float16", "float32", "float64", "int32", "int64", "bool"]
OPS = [("add", operator.add), ("radd", lambda a, s: s + a), ("mul", operator.mul),
       ("sub", operator.sub), ("pow", operator.pow), ("truediv", operator.truediv)]


def _val(t) -> tuple:
    return str(t.dtype).replace("torch.", ""), np.asarray(t.detach().numpy()).tolist()


def _tj_dtype_name(t) -> str:
    return {"f16": "float16", "f32": "float32", "f64": "float64", "i32": "int32",
            "i64": "int64", "bool": "bool"}[t.dtype.name]


@pytest.mark.parametrize("d", DTYPES)
@pytest.mark.parametrize("s", [np.bool_(True), np.bool_(False), True, False])
def test_scalar_bool_operands_as_torch(d, s):
    v = np.array([1, 0, 1]).astype(bool if d == "bool" else d)
    for name, op in OPS:
        if type(s) is bool and name != "pow":
            continue            # (Python bools: already matched; the power is the change)
        try:
            want = op(torch.tensor(v), s)
        except (RuntimeError, TypeError, NotImplementedError):
            for fn in (op, tj.compile(op)):
                with pytest.raises((RuntimeError, TypeError, NotImplementedError)):
                    fn(tj.tensor(v), s)
            continue
        for fn in (op, tj.compile(op)):
            got = fn(tj.tensor(v), s)
            assert _tj_dtype_name(got) == str(want.dtype).replace("torch.", ""), (d, s, name)
            np.testing.assert_array_equal(np.asarray(got.numpy()), want.numpy(), err_msg=name)
