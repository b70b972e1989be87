"""Silent wrong results found by a code review: `.data` of a captured tensor inside a compiled
function (in-place updates and assignment), random fills with an explicit generator inside a
compiled function, and inference_mode's argument handling."""
import numpy as np
import pytest

import tracejit as tj
from conftest import assert_close


def _run_twice(fn, make):
    """(eager result, compiled result): fn(state, x) called twice on fresh state each way."""
    x = np.arange(3, dtype=np.float32)
    outs = []
    for compiled in (False, True):
        state = make()
        f = tj.compile(lambda x: fn(state, x)) if compiled else (lambda x: fn(state, x))
        r = [f(x).numpy().copy() for _ in range(2)]
        outs.append((state.numpy().copy(), r))
    return outs


def test_inplace_through_data_of_a_capture_is_written_back():
    def fn(w, x):
        w.data.add_(1.0)
        w.data.mul_(3.0)
        return w * 1.0 + x

    (we, re), (wc, rc) = _run_twice(fn, lambda: tj.ones(3))
    assert_close(wc, we)
    for a, b in zip(rc, re):
        assert_close(a, b)
    assert_close(we, np.full(3, 21.0, np.float32))     # (1 + 1) * 3, (6 + 1) * 3


def test_inplace_through_data_of_a_parameter_with_grad():
    w = tj.ones(3, requires_grad=True)

    @tj.compile
    def step(x):
        loss = (w * x).sum()
        w.data.sub_(0.1 * x)
        return loss

    x = np.ones(3, np.float32)
    step(x)
    step(x)
    assert_close(w.detach(), np.full(3, 0.8, np.float32))


def test_data_assignment_on_a_capture_is_written_back():
    def fn(r, x):
        r.data = r.data + x
        return r * 2.0

    (we, re), (wc, rc) = _run_twice(fn, lambda: tj.zeros(3))
    assert_close(wc, we)
    for a, b in zip(rc, re):
        assert_close(a, b)
    assert_close(we, 2 * np.arange(3, dtype=np.float32))


def test_data_assignment_on_a_capture_with_another_shape_raises():
    r = tj.zeros(3)

    @tj.compile
    def f(x):
        r.data = tj.zeros(4) + x.sum()
        return x

    with pytest.raises(RuntimeError, match=r"\.data = .*test_tracer_review_fixes\.py:\d+"):
        f(np.ones(2, np.float32))
    assert_close(r, np.zeros(3, np.float32))


def test_fill_with_an_explicit_generator_inside_compile_raises():
    g = tj.Generator("cpu") if hasattr(tj, "Generator") else None
    if g is None:
        from tracejit.tracer.rng import Generator
        from tracejit.devices import device
        g = Generator(device("cpu"))
    w = tj.zeros(4)

    @tj.compile
    def f(x):
        w.normal_(generator=g)
        return w + x

    with pytest.raises(RuntimeError, match=r"normal_\(generator=.*test_tracer_review_fixes\.py:\d+"):
        f(np.zeros(4, np.float32))


def test_fill_with_the_default_generator_inside_compile_draws_each_call():
    w = tj.zeros(4)
    gen = tj.manual_seed(0)

    @tj.compile
    def f(x):
        w.normal_(generator=gen)
        return w + x

    a = f(np.zeros(4, np.float32)).numpy().copy()
    b = f(np.zeros(4, np.float32)).numpy().copy()
    assert not np.allclose(a, b)


@pytest.mark.parametrize("off", [0, np.bool_(False), False])
def test_inference_mode_with_a_falsy_non_bool_changes_nothing(off):
    with tj.inference_mode(off):
        assert tj.is_grad_enabled()


@pytest.mark.parametrize("on", [1, np.bool_(True)])
def test_inference_mode_with_a_truthy_non_bool(on):
    with tj.inference_mode(on):
        assert not tj.is_grad_enabled()
    assert tj.is_grad_enabled()


def test_inference_mode_bare_decorator_still_works():
    @tj.inference_mode
    def f():
        return tj.is_grad_enabled()

    assert f() is False


def _checkpoint_grads(use_checkpoint: bool):
    w = tj.tensor(np.linspace(0.5, 2.0, 64).astype(np.float32))

    def block(h):
        return tj.dropout(h, 0.5) * w

    @tj.compile
    def f(x):
        x = x.detach().requires_grad_(True)
        h = x * 1.0
        y = tj.checkpoint(block, h) if use_checkpoint else block(h)
        (g,) = tj.autograd.grad(y.sum(), [x])
        return y, g

    tj.manual_seed(0)
    x = np.ones(64, np.float32)
    return [tuple(t.numpy().copy() for t in f(x)) for _ in range(2)]


def test_checkpoint_with_dropout_inside_compile_replays_the_forward_mask():
    with_cp = _checkpoint_grads(True)
    without = _checkpoint_grads(False)
    w = np.linspace(0.5, 2.0, 64).astype(np.float32)
    for (y, g), (y0, g0) in zip(with_cp, without):
        mask = y != 0
        assert 0 < mask.sum() < 64
        assert_close(g, mask * 2 * w)
        assert_close(y, y0)
        assert_close(g, g0)
    assert not np.array_equal(with_cp[0][0], with_cp[1][0])     # fresh numbers per call
