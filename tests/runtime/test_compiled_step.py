"""A whole training step compiled as one graph, with plain tensors: backward() inside the trace
is the reverse transform and fills `.grad` as eagerly (set, accumulated in place, read later in
the step, set to None), in-place updates of captured tensors are written back into the same
tensors, and what the user sees after each call is what the eager step leaves."""
import sys
import warnings

import numpy as np
import pytest

import fakecupy
import tracejit as tj
from tracejit.ir.interpret import interpret
from tracejit import devices
from tracejit.runtime.cuda_backend import CudaExecutable

RNG = np.random.default_rng(0)
W0, B0 = RNG.standard_normal((3, 2)), RNG.standard_normal(2)
XS = [RNG.standard_normal((4, 3)) for _ in range(5)]


def _params():
    return tj.tensor(W0.copy(), requires_grad=True), tj.tensor(B0.copy(), requires_grad=True)


def _close(a, b, tol=1e-12):
    np.testing.assert_allclose(np.asarray(a.detach().numpy() if hasattr(a, "detach") else a),
                               np.asarray(b.detach().numpy() if hasattr(b, "detach") else b),
                               rtol=tol, atol=tol)


def _sgd_step(w, b):
    def step(x, lr):
        loss = ((x @ w + b).tanh() ** 2).mean()
        loss.backward()
        with tj.no_grad():
            for p in (w, b):
                p.sub_(lr * p.grad)
        for p in (w, b):
            p.grad = None
        return loss
    return step


def test_manual_sgd_step_matches_eager_over_five_steps():
    we, be = _params()
    wc, bc = _params()
    eager, compiled = _sgd_step(we, be), tj.compile(_sgd_step(wc, bc))
    w_obj = wc
    for i, x in enumerate(XS):
        lr = 0.1 * (i + 1)                       # a Python float argument: no retrace
        le, lc = eager(tj.tensor(x), lr), compiled(tj.tensor(x), lr)
        _close(lc, le)
        _close(wc, we)
        _close(bc, be)
        assert wc.grad is None and bc.grad is None
        assert wc._version_count == we._version_count     # one in-place op per step
    assert wc is w_obj and wc.requires_grad and wc.is_leaf
    assert compiled.cache_info().misses == 1


def _accumulate(w):
    def fb(x):
        loss = ((x @ w).sin() * 3).sum()
        loss.backward()
        return loss
    return fb


def test_grad_accumulates_across_calls_as_eager():
    we = tj.tensor(W0.copy(), requires_grad=True)
    wc = tj.tensor(W0.copy(), requires_grad=True)
    eager, compiled = _accumulate(we), tj.compile(_accumulate(wc))
    compiled(tj.tensor(XS[0]))
    eager(tj.tensor(XS[0]))
    first = wc.grad                               # None before: a new tensor
    assert first is not None and not first.requires_grad
    _close(first, we.grad)
    for x in XS[1:]:
        compiled(tj.tensor(x))
        eager(tj.tensor(x))
        assert wc.grad is first                   # then updated in place, as eager does
        _close(wc.grad, we.grad)
    # the first call traced with .grad None, the second with a .grad: two traces, then hits
    assert compiled.cache_info().misses == 2
    wc.grad = None                     # a None slot again: the first trace is reused
    compiled(tj.tensor(XS[0]))
    _close(wc.grad, _grad_of_one_call(XS[0]))
    assert compiled.cache_info() == (4, 2, 2)


def _grad_of_one_call(x):
    w = tj.tensor(W0.copy(), requires_grad=True)
    _accumulate(w)(tj.tensor(x))
    return w.grad


def test_gradient_read_later_in_the_step_is_the_traced_gradient():
    def step(w, b, x):
        loss = (x @ w + b).pow(2).sum()
        loss.backward()
        total = (w.grad ** 2).sum() + (b.grad ** 2).sum()
        scale = 1.0 / (total.sqrt() + 1e-6)
        w.grad.mul_(scale)                        # clip_grad_norm_ does this
        b.grad.mul_(scale)
        return total
    we, be = _params()
    wc, bc = _params()
    x = tj.tensor(XS[0])
    te = step(we, be, x)
    tc = tj.compile(lambda x: step(wc, bc, x))(x)
    _close(tc, te)
    _close(wc.grad, we.grad)
    _close(bc.grad, be.grad)


def test_zero_grad_in_place_keeps_the_grad_tensor():
    def step(w, x):
        (x @ w).sum().backward()
        g = w.grad
        with tj.no_grad():
            w.sub_(0.1 * g)
        g.zero_()                                 # zero_grad(set_to_none=False)
    we = tj.tensor(W0.copy(), requires_grad=True)
    wc = tj.tensor(W0.copy(), requires_grad=True)
    compiled = tj.compile(lambda x: step(wc, x))
    for x in XS[:3]:
        step(we, tj.tensor(x))
        compiled(tj.tensor(x))
        _close(wc, we)
        _close(wc.grad, we.grad)
    g = wc.grad
    compiled(tj.tensor(XS[3]))
    assert wc.grad is g and np.all(g.numpy() == 0)


def test_running_buffer_update_like_batchnorm():
    def step(w, mean, count, x):
        h = x @ w
        m = h.mean(0)
        loss = ((h - m) ** 2).mean()
        loss.backward()
        with tj.no_grad():
            mean.mul_(0.9).add_(0.1 * m)
            count.add_(1)
            w.sub_(0.05 * w.grad)
        w.grad = None
        return loss
    state_e = [tj.tensor(W0.copy(), requires_grad=True), tj.zeros(2, dtype=tj.float64),
               tj.tensor(np.array(0))]
    state_c = [tj.tensor(W0.copy(), requires_grad=True), tj.zeros(2, dtype=tj.float64),
               tj.tensor(np.array(0))]
    objs = list(state_c)
    compiled = tj.compile(lambda x: step(*state_c, x))
    for x in XS:
        le = step(*state_e, tj.tensor(x))
        lc = compiled(tj.tensor(x))
        _close(lc, le)
        for a, b in zip(state_c, state_e):
            _close(a, b)
            assert a._version_count == b._version_count
    assert all(a is b for a, b in zip(state_c, objs))
    assert state_c[2].item() == len(XS) and state_c[2].dtype == tj.int64
    assert compiled.cache_info().misses == 1


def test_hyperparameter_in_a_tensor_changes_without_retracing():
    lr = tj.tensor(0.1, dtype=tj.float64)
    we, be = _params()
    wc, bc = _params()

    def step(w, b, x):
        loss = (x @ w + b).tanh().sum()
        loss.backward()
        with tj.no_grad():
            w.sub_(lr * w.grad)
            b.sub_(lr * b.grad)
        w.grad = b.grad = None
    compiled = tj.compile(lambda x: step(wc, bc, x))
    for i, x in enumerate(XS):
        lr.fill_(0.1 / (i + 1))
        step(we, be, tj.tensor(x))
        compiled(tj.tensor(x))
        _close(wc, we)
    assert compiled.cache_info().misses == 1


def test_a_step_that_ran_backward_returns_plain_tensors():
    w = tj.tensor(W0.copy(), requires_grad=True)
    loss = tj.compile(_accumulate(w))(tj.tensor(XS[0]))
    assert not loss.requires_grad and loss.grad_fn is None
    # a compiled forward without backward inside still joins eager autograd
    f = tj.compile(lambda x: (x @ w).sum())
    w.grad = None
    y = f(tj.tensor(XS[0]))
    assert y.requires_grad
    y.backward()
    _close(w.grad, _grad_of_matmul_sum(XS[0]))


def _grad_of_matmul_sum(x):
    return np.repeat(x.sum(0)[:, None], 2, axis=1)


def test_failed_trace_leaves_no_traced_grad_behind():
    w = tj.tensor(W0.copy(), requires_grad=True)

    @tj.compile
    def bad(x):
        loss = (x @ w).sum()
        loss.backward()
        if loss > 0:                              # data-dependent control flow: an error
            return loss
        return -loss
    with pytest.raises(RuntimeError, match="tj.where"):
        bad(tj.tensor(XS[0]))
    assert w.grad is None
    (tj.tensor(XS[0]) @ w).sum().backward()       # eager autograd still works on w
    _close(w.grad, _grad_of_matmul_sum(XS[0]))


def test_in_place_change_before_backward_is_reported_as_eagerly():
    def step(w, x):
        loss = (x * w * w).sum()
        with tj.no_grad():
            w.mul_(2.0)
        loss.backward()
    x = tj.tensor(np.ones((3, 2)))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        step(tj.tensor(W0.copy(), requires_grad=True), x)
    w = tj.tensor(W0.copy(), requires_grad=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        tj.compile(lambda x: step(w, x))(x)
    assert w.grad is None
    _close(w, W0)


def test_hooks_and_autograd_grad_inside_the_step():
    we = tj.tensor(W0.copy(), requires_grad=True)
    wc = tj.tensor(W0.copy(), requires_grad=True)
    for w in (we, wc):
        w.register_hook(lambda g: g * 2)

    def step(w, x):
        loss = (x @ w).exp().sum()
        (gw,) = tj.autograd.grad(loss, [w], retain_graph=True)   # .grad untouched
        loss.backward()
        return gw
    ge = step(we, tj.tensor(XS[1]))
    gc = tj.compile(lambda x: step(wc, x))(tj.tensor(XS[1]))
    _close(gc, ge)
    _close(wc.grad, we.grad)
    x = XS[1]
    raw = x.T @ np.exp(x @ W0)                    # without the hook
    _close(wc.grad, 2 * raw, 1e-10)


def test_grad_set_outside_between_calls_traces_again():
    w = tj.tensor(W0.copy(), requires_grad=True)
    f = tj.compile(_accumulate(w))
    f(tj.tensor(XS[0]))
    w.grad = tj.ones(3, 2, dtype=tj.float64)      # another tensor the trace never saw
    mine = w.grad
    f(tj.tensor(XS[1]))
    assert w.grad is mine
    _close(w.grad, 1 + _grad_of_one_call(XS[1]).numpy())
    assert f.cache_info().misses == 2


def test_constant_in_place_fill_of_a_capture_is_a_write():
    buf = tj.ones(4, dtype=tj.float64)

    @tj.compile
    def reset(x):
        buf.zero_()                               # a constant new value: still a write
        return x * 2
    reset(tj.ones(2))
    assert np.all(buf.numpy() == 0)
    buf.fill_(5.0)
    reset(tj.ones(2))                             # every call writes, not only the trace
    assert np.all(buf.numpy() == 0)
    assert reset.cache_info().misses == 1


def _momentum_step(w, state):
    def step(x):
        loss = (x * w).sum()
        loss.backward()
        with tj.no_grad():
            if "m" not in state:                  # state made lazily, as optimizers do
                state["m"] = tj.zeros_like(w)
            m = state["m"]
            m.mul_(0.9).add_(w.grad)
            w.sub_(0.1 * m)
        w.grad = None
        return loss
    return step


def test_state_made_inside_the_first_compiled_step_is_stored_as_eager():
    we, wc = (tj.tensor(np.arange(3.0), requires_grad=True) for _ in range(2))
    se, sc = {}, {}
    eager, compiled = _momentum_step(we, se), tj.compile(_momentum_step(wc, sc))
    for i in range(4):
        x = tj.tensor(np.full(3, i + 1.0))
        eager(x)
        compiled(x)
        m = sc["m"]
        assert not m._traced and m.grad_fn is None and not m.requires_grad
        _close(m, se["m"])
        _close(wc, we)
    # the first call stored the new state and was not cached; the second traced with it
    assert compiled.cache_info().misses == 2 and compiled.cache_info().entries == 1


def test_tensors_stored_outside_on_every_call_stay_right_and_warn_once():
    w = tj.tensor(np.ones(3), requires_grad=True)
    log = {}

    @tj.compile
    def f(x):
        y = (x * w).sum()
        log["last"] = y * 2                       # escapes on every call
        return y
    f(tj.ones(3))
    assert log["last"].item() == 6.0
    with pytest.warns(UserWarning, match="every call traces again"):
        f(tj.full((3,), 2.0))
    assert log["last"].item() == 12.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # said once
        f(tj.full((3,), 3.0))
    assert log["last"].item() == 18.0


def test_state_kept_from_a_failed_trace_is_a_clear_error():
    state = {}

    @tj.compile
    def f(x):
        state["y"] = x * 2
        if x.sum() > 0:                           # fails while tracing
            return x
        return -x
    with pytest.raises(RuntimeError, match="tj.where"):
        f(tj.ones(2))
    with pytest.raises(RuntimeError, match=r"made while tracing a compiled function \(at "
                                           r".*test_compiled_step.py:\d+\).*never ran"):
        state["y"].item()


def test_whole_step_on_a_gpu_stores_writes_and_grads_on_the_device(monkeypatch):
    """The device plumbing through the strict fake CuPy: kernels are run by the reference
    interpreter on host copies (the fake cannot launch them); parameters, their new `.grad`
    and the in-place updates stay device arrays, with the eager step's values."""
    fake = fakecupy.module()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(devices, "_cupy", None)

    def run(self, args):
        host = [a.get() if hasattr(a, "get") else np.asarray(a) for a in args]
        return [fake.asarray(o) for o in interpret(self.graph, host)]
    monkeypatch.setattr(CudaExecutable, "run", run)

    def step(w, mean, x):
        loss = ((x @ w).tanh() ** 2).sum()
        loss.backward()
        with tj.no_grad():
            mean.mul_(0.5).add_(w.mean(1))
            w.sub_(0.1 * w.grad)
        return loss
    we, me = tj.tensor(W0.copy(), requires_grad=True), tj.zeros(3, dtype=tj.float64)
    wc = tj.tensor(W0.copy(), requires_grad=True, device="cuda")
    mc = tj.zeros(3, dtype=tj.float64, device="cuda")
    compiled = tj.compile(lambda x: step(wc, mc, x))
    for x in XS[:3]:
        le = step(we, me, tj.tensor(x))
        lc = compiled(tj.tensor(x, device="cuda"))
        _close(lc.cpu(), le)
        assert wc.device == "cuda:0" and mc.device == "cuda:0" and wc.grad.device == "cuda:0"
        _close(wc.cpu(), we)
        _close(mc.cpu(), me)
        _close(wc.grad.cpu(), we.grad)
    assert compiled.cache_info().misses == 2          # .grad None, then a tensor
    assert isinstance(compiled.lower(tj.tensor(XS[0], device="cuda"))._entry.exe, CudaExecutable)


def test_checkpoint_inside_a_compiled_step_fills_grads():
    def make(w):
        def block(x):
            return (x @ w).tanh() @ w.T

        def step(x):
            loss = tj.checkpoint(block, x).pow(2).sum()
            loss.backward()
            return loss
        return step
    we = tj.tensor(W0.copy(), requires_grad=True)
    wc = tj.tensor(W0.copy(), requires_grad=True)
    x = tj.tensor(XS[2])
    _close(tj.compile(make(wc))(x), make(we)(x))
    _close(wc.grad, we.grad)
