"""retain_grad() then an in-place op: `.grad` is the gradient of the tensor's latest version,
as torch's. The retained slot stayed on the node the tensor had when retain_grad was called,
so `.grad` held the gradient of the value before the in-place op, silently. Hooks registered
before the in-place op still see the old version's gradient (torch's documented rule)."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

A = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
W = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])


def _base_then_inplace(lib, x):
    m = x * 1.0
    m.retain_grad()
    m.mul_(2.0)
    return m, [m]


def _twice(lib, x):
    m = x * 1.0
    m.retain_grad()
    m.mul_(2.0)
    m.add_(x)
    return m, [m]


def _tanh_(lib, x):
    m = x * 1.5
    m.retain_grad()
    m.tanh_()
    return m, [m]


def _view_retained_base_changed(lib, x):
    m = x * 1.0
    v = m[0]
    v.retain_grad()
    m.mul_(3.0)
    return m, [v]


def _base_retained_view_changed(lib, x):
    m = x * 1.0
    m.retain_grad()
    m[1].mul_(3.0)
    return m, [m]


def _view_retained_view_changed(lib, x):
    m = x * 1.0
    v = m[:, 1:]
    v.retain_grad()
    v.add_(1.0)
    return m, [v]


CASES = {f.__name__[1:]: f for f in (_base_then_inplace, _twice, _tanh_,
                                      _view_retained_base_changed, _base_retained_view_changed,
                                      _view_retained_view_changed)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_retained_grad_is_the_latest_versions(case):
    got = []
    for lib in (tj, torch):
        x = lib.tensor(A, requires_grad=True)
        out, kept = CASES[case](lib, x)
        loss = (out * lib.tensor(W) * out).sum()
        for t in kept:                  # (their own uses: a view's node then runs)
            loss = loss + (t * t * 0.5).sum()
        loss.backward()
        got.append([x.grad.numpy()] + [t.grad.numpy() for t in kept])
    for a, b in zip(*got):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_a_hook_registered_before_the_in_place_op_sees_the_old_versions_gradient():
    seen = {}
    for lib in (tj, torch):
        x = lib.tensor(A, requires_grad=True)
        m = x * 1.0
        calls = seen[lib.__name__] = []
        m.register_hook(lambda g: calls.append(g.detach().numpy().copy()))
        m.retain_grad()
        m.mul_(2.0)
        (m * lib.tensor(W)).sum().backward()
        calls.append(m.grad.numpy())
    for a, b in zip(seen["tracejit"], seen["torch"]):
        np.testing.assert_allclose(a, b)
