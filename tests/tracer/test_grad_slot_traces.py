"""A compiled training step that starts with zero_grad() traces once: the .grad slots it
overwrites before reading are no part of the trace's guard (tracer/grad_slots.py). Values
match the eager loop; steps that read .grad before overwriting it still guard on it."""
import numpy as np
import pytest

import tracejit as tj


def _model_and_data():
    rs = np.random.RandomState(0)
    model = tj.nn.Sequential(tj.nn.Linear(5, 7), tj.nn.ReLU(), tj.nn.Linear(7, 2))
    xs = [tj.tensor(rs.randn(4, 5).astype(np.float32)) for _ in range(5)]
    ys = [tj.tensor(rs.randn(4, 2).astype(np.float32)) for _ in range(5)]
    return model, xs, ys


def _params(model):
    return [p.detach().numpy().copy() for p in model.parameters()]


@pytest.mark.parametrize("zero", ["optimizer", "module"])
@pytest.mark.parametrize("opt_name", ["adamw", "sgd"])
def test_zero_grad_first_traces_once(zero, opt_name):
    results = []
    for compiled in (False, True):
        tj.manual_seed(0)
        model, xs, ys = _model_and_data()
        opt = tj.optim.AdamW(model.parameters(), lr=1e-2) if opt_name == "adamw" else \
            tj.optim.SGD(model.parameters(), lr=1e-2)

        def step(x, y):
            (opt if zero == "optimizer" else model).zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            return loss

        fn = tj.compile(step) if compiled else step
        losses = [float(fn(x, y).item()) for x, y in zip(xs, ys)]
        grads = [p.grad.numpy().copy() for p in model.parameters()]
        results.append((losses, _params(model), grads))
        if compiled:
            assert fn.cache_info().misses == 1
    (l0, p0, g0), (l1, p1, g1) = results
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(p1 + g1, p0 + g0):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_zero_grad_after_step_and_unused_parameter():
    """zero_grad at the end leaves None each call; an unused parameter's .grad is set to None
    after every call (it held a tensor before the first one)."""
    model, xs, ys = _model_and_data()
    unused = tj.nn.Parameter(tj.ones(3))
    unused.grad = tj.ones(3)
    opt = tj.optim.SGD(list(model.parameters()) + [unused], lr=1e-2)

    @tj.compile
    def step(x, y):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()

    for x, y in zip(xs, ys):
        step(x, y)
        assert unused.grad is None
        assert all(p.grad is not None for p in model.parameters())
    assert step.cache_info().misses == 1


def test_accumulating_step_still_guards_on_grad():
    """Without zero_grad the step adds to .grad: None and a tensor are different traces, and
    the sums equal the eager ones."""
    out = []
    for compiled in (False, True):
        tj.manual_seed(0)
        model, xs, ys = _model_and_data()

        def step(x, y):
            ((model(x) - y) ** 2).mean().backward()

        fn = tj.compile(step) if compiled else step
        for x, y in zip(xs, ys):
            fn(x, y)
        out.append([p.grad.numpy().copy() for p in model.parameters()])
        if compiled:
            assert fn.cache_info().misses == 2
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
