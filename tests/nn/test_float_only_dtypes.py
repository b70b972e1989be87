"""Ops torch has no integer or bool kernel for raise on such inputs, eagerly and compiled, as
torch does (they computed in float32 before); where torch takes them (relu and hardtanh of
integers, softmax with dtype=), values and dtypes are torch's."""
import pytest
import torch
import torch.nn.functional as TF

import tracejit as tj
import tracejit.nn.functional as F

# (name, tracejit call, torch call): F is tracejit's functional, TF torch's
OPS = [
    ("gelu", lambda m, x: m.gelu(x)),
    ("gelu", lambda m, x: m.gelu(x, approximate="tanh")),
    ("silu", lambda m, x: m.silu(x)),
    ("softmax", lambda m, x: m.softmax(x, -1)),
    ("log_softmax", lambda m, x: m.log_softmax(x, -1)),
    ("softmin", lambda m, x: m.softmin(x, -1)),
    ("layer_norm", lambda m, x: m.layer_norm(x, (3,))),
    ("group_norm", lambda m, x: m.group_norm(x, 1)),
    ("rms_norm", lambda m, x: m.rms_norm(x, (3,))),
    ("softplus", lambda m, x: m.softplus(x)),
    ("mish", lambda m, x: m.mish(x)),
    ("elu", lambda m, x: m.elu(x)),
    ("selu", lambda m, x: m.selu(x)),
    ("celu", lambda m, x: m.celu(x)),
    ("leaky_relu", lambda m, x: m.leaky_relu(x)),
    ("hardswish", lambda m, x: m.hardswish(x)),
    ("hardsigmoid", lambda m, x: m.hardsigmoid(x)),
    ("logsigmoid", lambda m, x: m.logsigmoid(x)),
    ("glu", lambda m, x: m.glu(x[..., :2], -1)),
    ("hardshrink", lambda m, x: m.hardshrink(x)),
    ("softshrink", lambda m, x: m.softshrink(x)),
    ("relu", lambda m, x: m.relu(x)),
    ("hardtanh", lambda m, x: m.hardtanh(x, -1.5, 2.5)),
    ("hardtanh", lambda m, x: m.relu6(x)),
]

DTYPES = [(tj.int64, torch.int64), (tj.int32, torch.int32), (tj.bool_, torch.bool)]


def _inputs(tdt, rdt):
    vals = [[[-3, 0, 2], [5, 1, -1]]]           # (1, 2, 3)
    return tj.tensor(vals).to(tdt), torch.tensor(vals).to(rdt)


@pytest.mark.parametrize("tdt,rdt", DTYPES, ids=["i64", "i32", "bool"])
def test_raises_where_torch_raises(tdt, rdt):
    for name, call in OPS:
        x, r = _inputs(tdt, rdt)
        try:
            want = call(TF, r)
        except (NotImplementedError, RuntimeError):
            want = None
        if want is None:
            # the op and dtype named, the user's line; catchable as torch's and as a TypeError
            with pytest.raises(NotImplementedError, match=rf"{name}.*{tdt.name}.*"
                                                          rf"test_float_only_dtypes.py:\d+"):
                call(F, x)
            with pytest.raises(NotImplementedError, match=name):
                tj.compile(lambda v: call(F, v))(x)
        else:
            got = call(F, x)
            assert got.dtype.name == {torch.int64: "i64", torch.int32: "i32"}[want.dtype], name
            assert got.tolist() == want.tolist(), name


def test_tensor_methods_and_torch_accepted_forms():
    x, r = _inputs(tj.int64, torch.int64)
    with pytest.raises(TypeError, match="softmax"):        # (tracejit's dtype errors' class)
        x.softmax(-1)
    with pytest.raises(NotImplementedError, match="relu"):
        tj.relu(x > 0)
    # torch takes an integer input with a float dtype=, and relu/hardtanh of integers
    f = tj.compile(lambda v: (F.softmax(v, -1, dtype=tj.float32),
                              F.log_softmax(v, -1, dtype=tj.float64), tj.relu(v),
                              F.hardtanh(v, 0.5, 2.5)))
    want = (TF.softmax(r, -1, dtype=torch.float32), TF.log_softmax(r, -1, dtype=torch.float64),
            torch.relu(r), TF.hardtanh(r, 0.5, 2.5))
    for got in (f(x), f(x)):                 # (the trace, then the cached call)
        for g, w in zip(got, want):
            assert str(g.dtype.np) == str(w.numpy().dtype)
            assert torch.allclose(torch.from_numpy(g.numpy().copy()), w, rtol=1e-6, atol=0)
    y = x.clone()
    F.hardtanh_(y, -1.5, 2.5)
    assert y.tolist() == TF.hardtanh_(r.clone(), -1.5, 2.5).tolist()
