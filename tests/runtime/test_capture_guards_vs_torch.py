"""A compiled function must not silently reuse a trace whose assumptions the user changed
between calls: a captured parameter's requires_grad (for a step running backward() inside), a
module's forward hooks, a module's plain Python attributes (LayerNorm.eps, Dropout.p,
BatchNorm.momentum, a user's own `self.scale`), and the optimizer's state (cleared, replaced,
deleted, loaded). Each case runs the same steps in PyTorch eager and compares; the last tests
check that a steady loop still traces once."""
from collections import defaultdict

import numpy as np
import pytest
import torch

import tracejit as tj
import tracejit.nn as tnn

RNG = np.random.default_rng(7)


def _np(t):
    return t if isinstance(t, np.ndarray) else t.detach().numpy()


def _close(a, b, tol=1e-10):
    a, b = _np(a), _np(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def _copy_params(m, tm):
    m.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})


# -- requires_grad of a captured parameter, for a step that runs backward() inside ------------------
def _sgd_by_hand(lib, w, b):
    def step(x):
        loss = ((x * w + b) ** 2).sum()
        loss.backward()
        with lib.no_grad():
            for p in (w, b):
                if p.grad is not None:
                    p.sub_(0.1 * p.grad)
                    p.grad = None
        return loss
    return step


def test_requires_grad_toggled_between_compiled_steps():
    vals = []
    for lib in (tj, torch):
        w = lib.tensor(np.ones(3), requires_grad=True)
        b = lib.tensor(np.ones(3), requires_grad=True)
        step = _sgd_by_hand(lib, w, b)
        f = tj.compile(step) if lib is tj else step
        x = lib.tensor(np.arange(3.0))
        out = []
        for frozen in (False, True, True, False, True, False):
            w.requires_grad_(not frozen)
            out += [float(f(x).detach()), _np(w).copy(), _np(b).copy()]
        vals.append(out)
        if lib is tj:       # two forms (w frozen or not), each traced once, then reused
            assert f.cache_info().misses == 2
    for a, t in zip(*vals):
        np.testing.assert_allclose(a, t, rtol=1e-12)


def test_requires_grad_of_module_weight_frozen_in_compiled_training_step():
    tm = torch.nn.Linear(3, 2).double()
    m = tnn.Linear(3, 2).double()
    _copy_params(m, tm)
    opt, topt = tj.optim.SGD(m.parameters(), lr=0.1), torch.optim.SGD(tm.parameters(), lr=0.1)

    @tj.compile
    def step(x):
        loss = (m(x) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    for i in range(4):
        x = RNG.random((4, 3))
        if i == 2:
            m.weight.requires_grad_(False)
            tm.weight.requires_grad_(False)
        tl = (tm(torch.tensor(x)) ** 2).mean()
        tl.backward()
        topt.step()
        topt.zero_grad()
        _close(step(tj.tensor(x)), tl)
    _close(m.weight, tm.weight)
    _close(m.bias, tm.bias)


# -- forward hooks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["compiled_module", "module_in_function"])
def test_forward_hooks_added_and_removed_between_calls(how):
    tm = torch.nn.Linear(3, 2).double()
    m = tnn.Linear(3, 2).double()
    _copy_params(m, tm)
    f = tj.compile(m) if how == "compiled_module" else tj.compile(lambda x: m(x).tanh())
    tf = tm if how == "compiled_module" else (lambda x: tm(x).tanh())
    x = RNG.random((4, 3))

    def check():
        _close(f(tj.tensor(x)), tf(torch.tensor(x)))

    check()
    h, th = m.register_forward_hook(lambda mod, a, out: out * 2), \
        tm.register_forward_hook(lambda mod, a, out: out * 2)
    check()
    h.remove()
    th.remove()
    check()
    h, th = m.register_forward_pre_hook(lambda mod, a: (a[0] + 1,)), \
        tm.register_forward_pre_hook(lambda mod, a: (a[0] + 1,))
    check()
    with h:                 # the handle as a context manager removes the hook at exit
        pass
    th.remove()
    check()


# -- plain Python attributes of a module ------------------------------------------------------------
def _run_pair(m, tm, f, tf, x, change):
    """Call both, apply `change(module)` to each, call both again; compare every result."""
    _close(f(tj.tensor(x)), tf(torch.tensor(x)))
    change(m)
    change(tm)
    _close(f(tj.tensor(x)), tf(torch.tensor(x)))


def test_layernorm_eps_changed():
    tm = torch.nn.LayerNorm(4).double()
    m = tnn.LayerNorm(4).double()
    f = tj.compile(lambda x: m(x) * 1.0)
    x = RNG.random((3, 4)) * 0.1            # a variance comparable to the new eps
    _run_pair(m, tm, f, lambda x: tm(x) * 1.0, x, lambda mod: setattr(mod, "eps", 0.05))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_dropout_p_changed(mode):
    m, tm = tnn.Dropout(0.0), torch.nn.Dropout(0.0)
    getattr(m, mode)()
    getattr(tm, mode)()
    f = tj.compile(lambda x: m(x) + 1.0)
    tf = lambda x: tm(x) + 1.0              # noqa: E731
    x = RNG.random((5, 6)) + 0.5
    # p 0 and 1 are deterministic: the identity, then (in training) all dropped
    _run_pair(m, tm, f, tf, x, lambda mod: setattr(mod, "p", 1.0))
    for mod in (m, tm):
        mod.p = 0.5
    y = _np(f(tj.tensor(x))) - 1.0
    if mode == "eval":
        _close(y, x)
    else:                   # each element dropped or scaled by 1 / (1 - p)
        kept = y != 0
        assert 0 < kept.sum() < kept.size
        np.testing.assert_allclose(y[kept], 2 * x[kept], rtol=1e-6)


@pytest.mark.parametrize("momentum", [0.5, None])
def test_batchnorm_momentum_changed(momentum):
    tm = torch.nn.BatchNorm1d(4).double()
    m = tnn.BatchNorm1d(4).double()
    f = tj.compile(lambda x: m(x).sum(1))
    for i in range(4):
        x = RNG.random((6, 4)) * (i + 1)
        if i == 2:
            m.momentum = tm.momentum = momentum
        _close(f(tj.tensor(x)), tm(torch.tensor(x)).sum(1))
    _close(m.running_mean, tm.running_mean)
    _close(m.running_var, tm.running_var)


def _scaled_class(nn):
    """The same user module for both libraries: a float, a string and a function attribute
    that forward reads."""
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3).double()
            self.scale = 2.0
            self.act = "tanh"
            self.fn = nn.functional.softplus

        def forward(self, x):
            y = self.fn(self.lin(x) * self.scale)
            return y.tanh() if self.act == "tanh" else y.sigmoid()
    return Scaled


def test_user_attributes_changed():
    tm = _scaled_class(torch.nn)()
    m = _scaled_class(tnn)()
    _copy_params(m, tm)
    f = tj.compile(m)
    x = RNG.random((2, 3))
    _run_pair(m, tm, f, tm, x, lambda mod: setattr(mod, "scale", -3.0))
    _run_pair(m, tm, f, tm, x, lambda mod: setattr(mod, "act", "sigmoid"))
    m.fn, tm.fn = tnn.functional.gelu, torch.nn.functional.gelu
    _close(f(tj.tensor(x)), tm(torch.tensor(x)))


class _Times(tnn.Module):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        return x * self.k


def test_attribute_type_change_int_to_float():
    m = _Times(2)
    f = tj.compile(lambda x: m(x) + 1)
    x = np.arange(4)
    _close(f(tj.tensor(x)), torch.tensor(x) * 2 + 1)
    m.k = 2.0               # equal, but an int tensor times a float is a float tensor
    _close(f(tj.tensor(x)), torch.tensor(x) * 2.0 + 1)


# -- optimizer state between compiled whole training steps ------------------------------------------
def _setup(opt_name, **kw):
    tm = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(),
                             torch.nn.Linear(4, 1)).double()
    m = tnn.Sequential(tnn.Linear(3, 4), tnn.Tanh(), tnn.Linear(4, 1)).double()
    _copy_params(m, tm)
    return m, tm, getattr(tj.optim, opt_name)(m.parameters(), **kw), \
        getattr(torch.optim, opt_name)(tm.parameters(), **kw)


def _train_vs_torch(opt_name, between, n=5, **kw):
    m, tm, o, to = _setup(opt_name, **kw)

    @tj.compile
    def step(x, y):
        loss = ((m(x) - y) ** 2).mean()
        loss.backward()
        o.step()
        o.zero_grad()
        return loss

    rng = np.random.default_rng(0)
    for i in range(n):
        x, y = rng.random((5, 3)), rng.random((5, 1))
        between(i, m, tm, o, to)
        tl = ((tm(torch.tensor(x)) - torch.tensor(y)) ** 2).mean()
        tl.backward()
        to.step()
        to.zero_grad()
        _close(step(tj.tensor(x), tj.tensor(y)), tl)
    for p, tp in zip(m.parameters(), tm.parameters()):
        _close(p, tp)
    return step


def _clear(i, m, tm, o, to):
    if i == 2:
        o.state.clear()
        to.state.clear()


def _rebind(i, m, tm, o, to):
    if i == 2:
        o.state = defaultdict(dict)
        to.state = defaultdict(dict)


def _delete_one(i, m, tm, o, to):
    if i == 2:
        del o.state[m[0].weight]
        del to.state[tm[0].weight]


def _replace_entry(i, m, tm, o, to):
    if i == 2:
        key = "momentum_buffer" if "momentum_buffer" in to.state[tm[2].weight] else "exp_avg"
        o.state[m[2].weight][key] = tj.zeros((1, 4), dtype=tj.float64)
        to.state[tm[2].weight][key] = torch.zeros((1, 4), dtype=torch.float64)


def _load_earlier(i, m, tm, o, to):
    if i == 1:
        _load_earlier.saved = o.state_dict(), to.state_dict()
    if i == 3:
        o.load_state_dict(_load_earlier.saved[0])
        to.load_state_dict(_load_earlier.saved[1])


@pytest.mark.parametrize("between", [_clear, _rebind, _delete_one, _replace_entry],
                         ids=["clear", "rebind", "del", "replace_entry"])
@pytest.mark.parametrize("opt_name,kw", [("SGD", {"lr": 0.1, "momentum": 0.9}),
                                         ("AdamW", {"lr": 0.05, "weight_decay": 0.1})],
                         ids=["sgd_momentum", "adamw"])
def test_optimizer_state_changed_between_compiled_steps(opt_name, kw, between):
    _train_vs_torch(opt_name, between, **kw)


@pytest.mark.parametrize("opt_name,kw", [("SGD", {"lr": 0.1, "momentum": 0.9}),
                                         ("AdamW", {"lr": 0.05})], ids=["sgd_momentum", "adamw"])
def test_optimizer_state_dict_of_an_earlier_step_loaded(opt_name, kw):
    _train_vs_torch(opt_name, _load_earlier, **kw)


# -- a steady loop traces once ----------------------------------------------------------------------
class _Counting(tnn.Module):
    """Its forward updates Python attributes itself (a counter, the last batch size): the
    compiled call does not run that Python, and it must not retrace every call for it."""

    def __init__(self):
        super().__init__()
        self.lin = tnn.Linear(3, 3).double()
        self.calls = 0
        self.last_n = None

    def forward(self, x):
        self.calls += 1
        self.last_n = x.shape[0]
        return self.lin(x)


def test_steady_training_loop_does_not_retrace():
    body = _Counting()
    m = tnn.Sequential(tnn.LayerNorm(3).double(), tnn.Dropout(0.0), body,
                       tnn.BatchNorm1d(3).double(), tnn.Linear(3, 1).double())
    o = tj.optim.AdamW(m.parameters(), lr=0.01)

    @tj.compile
    def step(x, y):
        h = m(x)
        h2 = body(x[:2])            # the same module again, at another batch size
        loss = ((h - y) ** 2).mean() + (h2 ** 2).mean()
        loss.backward()
        o.step()
        o.zero_grad()
        return loss

    for _ in range(6):
        step(tj.tensor(RNG.random((5, 3))), tj.tensor(RNG.random((5, 1))))
        m[0].weight.requires_grad_(True)     # unchanged: no retrace either
        m[3].momentum = 0.1                  # the same value again (bumps the epoch only)
        m.train()                            # already training
    assert step.cache_info().misses == 1
    m[3].momentum = 0.2                      # a real change: one more trace, then steady
    for _ in range(3):
        step(tj.tensor(RNG.random((5, 3))), tj.tensor(RNG.random((5, 1))))
    assert step.cache_info().misses == 2


def test_sgd_momentum_loop_traces_twice_then_steady():
    step = _train_vs_torch("SGD", lambda *a: None, n=6, lr=0.1, momentum=0.9)
    assert step.cache_info().misses == 2     # the first step has no momentum buffer yet
