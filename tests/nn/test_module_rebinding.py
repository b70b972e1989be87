"""A compiled module (or a compiled function calling one) reads its parameters, buffers and
submodules afresh: rebinding any of them after a call retraces instead of reusing the old
object (which was a silently stale result). Nothing changed: no retrace."""
from __future__ import annotations

import numpy as np

import tracejit as tj
import tracejit.nn as nn

X = np.arange(3.0)


class Scale(nn.Module):
    def __init__(self, k: float = 1.0) -> None:
        super().__init__()
        self.w = nn.Parameter(tj.ones(3) * k)
        self.register_buffer("b", tj.zeros(3))

    def forward(self, x):
        return (self.w * x + self.b).sum()


def _value(t) -> float:
    return float(t.detach().numpy())


def test_rebinding_a_parameter_retraces_every_way_of_compiling():
    m = Scale()
    by_wrapper = tj.compile(m)
    m2 = Scale()
    m2.compile()
    outer = tj.compile(lambda x: m(x) * 1)
    x = tj.tensor(X)
    assert _value(by_wrapper(x)) == _value(outer(x)) == _value(m2(x)) == 3.0
    m.w = nn.Parameter(tj.ones(3) * 2)
    m2.w = nn.Parameter(tj.ones(3) * 3)
    assert _value(by_wrapper(x)) == 6.0 and _value(outer(x)) == 6.0
    assert _value(m2(x)) == 9.0
    m2.w.data = tj.ones(3) * 4              # .data of the new parameter is read too
    assert _value(m2(x)) == 12.0


def test_rebinding_a_buffer_or_submodule_retraces():
    class Outer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Scale()

        def forward(self, x):
            return self.inner(x)

    m = Outer()
    f = tj.compile(m)
    x = tj.tensor(X)
    assert _value(f(x)) == 3.0
    m.inner.b = tj.ones(3)                   # buffer rebound
    assert _value(f(x)) == 6.0
    m.inner = Scale(2.0)                     # submodule replaced
    assert _value(f(x)) == 6.0 + 0.0         # 2 * (0+1+2) + 0
    m.inner.register_buffer("b", tj.ones(3) * 10)
    assert _value(f(x)) == 36.0


def test_container_changes_retrace():
    seq = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    lst = nn.ModuleList([nn.Linear(2, 2)])
    dct = nn.ModuleDict({"a": nn.Linear(2, 2)})

    def run(x):
        y = seq(x)
        for layer in lst:
            y = layer(y)
        return dct["a"](y).sum()

    f = tj.compile(run)
    x = tj.tensor(np.ones((1, 2)))
    with tj.no_grad():
        for i, new in enumerate([lambda: seq.__setitem__(0, nn.Linear(2, 2)),
                                 lambda: lst.append(nn.Linear(2, 2)),
                                 lambda: lst.__setitem__(0, nn.Linear(2, 2)),
                                 lambda: seq.insert(1, nn.Tanh()),
                                 lambda: dct.__setitem__("a", nn.Linear(2, 2)),
                                 lambda: lst.__delitem__(0)]):
            f(x)
            new()
            np.testing.assert_allclose(_value(f(x)), _value(run(x)), rtol=1e-12,
                                       err_msg=f"change {i}")


def test_unchanged_modules_do_not_retrace():
    m = Scale()
    f = tj.compile(m)
    x = tj.tensor(X)
    for _ in range(5):
        f(x)
    m.some_flag = True                      # an unrelated attribute: guards recheck and hold
    other = Scale()
    other.w = nn.Parameter(tj.ones(3))      # another module's change
    for _ in range(5):
        f(x)
    assert f.cache_info().misses == 1
    m.eval()
    f(x)
    m.train()
    f(x)
    assert f.cache_info().misses == 2       # eval mode is a trace of its own, train's is reused
