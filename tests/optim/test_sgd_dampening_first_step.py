"""SGD with momentum and dampening != 0 against torch 2.13, in float64: torch's first real step
sets the momentum buffer to the gradient (no dampening), and a step GradScaler skips (an inf
gradient) does not count as that first step. Eagerly, as a compiled whole training step (where
the skip is a masked update decided at run time), and with the first step skipped more than
once. Parameters and the optimizer's state_dict (momentum buffers) are compared after each
step."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tracejit as tj

STEPS = 6
TRACES: list = []


def _weights():
    rs = np.random.RandomState(3)
    return [rs.randn(4, 3), rs.randn(3)]


def _data(step: int, bad: set[int]):
    rs = np.random.RandomState(100 + step)
    x, y = rs.randn(5, 4), rs.randn(5, 3)
    if step in bad:
        x[1, 2] = np.inf
    return x, y


def _torch_run(bad: set[int], scaler_on: bool, **opt_kw):
    p = [torch.tensor(w, requires_grad=True) for w in _weights()]
    opt = torch.optim.SGD(p, lr=0.1, **opt_kw)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0, growth_interval=100,
                                  enabled=scaler_on)
    trail = []
    for step in range(STEPS):
        x, y = (torch.tensor(a) for a in _data(step, bad))
        opt.zero_grad()
        loss = ((x @ p[0] + p[1] - y) ** 2).mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        trail.append(_torch_snapshot(p, opt))
    return trail


def _torch_snapshot(p, opt):
    bufs = [opt.state[t].get("momentum_buffer") for t in p]
    return ([t.detach().numpy().copy() for t in p],
            [None if b is None else b.numpy().copy() for b in bufs])


def _tj_run(bad: set[int], scaler_on: bool, compiled: bool, read_state: bool = True, **opt_kw):
    p = [tj.tensor(w, requires_grad=True) for w in _weights()]
    opt = tj.optim.SGD(p, lr=0.1, **opt_kw)
    scaler = tj.amp.GradScaler("cpu", init_scale=4.0, growth_interval=100, enabled=scaler_on)

    def train_step(x, y):
        TRACES.append(1)            # the Python body runs only while a compiled step traces
        opt.zero_grad()
        loss = ((x @ p[0] + p[1] - y) ** 2).mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    fn = tj.compile(train_step) if compiled else train_step
    TRACES.clear()
    trail = []
    for step in range(STEPS):
        x, y = (tj.tensor(a) for a in _data(step, bad))
        fn(x, y)
        if not read_state and step < STEPS - 1:
            trail.append(([t.detach().numpy().copy() for t in p], None))
            continue
        sd = opt.state_dict()["state"]
        bufs = [sd.get(i, {}).get("momentum_buffer") for i in range(len(p))]
        trail.append(([t.detach().numpy().copy() for t in p],
                      [None if b is None else np.array(b.numpy()) for b in bufs]))
    return trail


def _compare(ours, ref):
    for step, ((p1, b1), (p2, b2)) in enumerate(zip(ours, ref)):
        for a, b in zip(p1, p2):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=f"step {step}")
        for a, b in zip(b1 or [], b2 if b1 is not None else []):
            assert (a is None) == (b is None), f"step {step}: momentum buffer {a} vs {b}"
            if a is not None:
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12,
                                           err_msg=f"step {step}")


KW = [dict(momentum=0.9, dampening=0.3), dict(momentum=0.5, dampening=0.7, weight_decay=0.01),
      dict(momentum=0.9, dampening=0.3, maximize=True)]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("kw", KW, ids=["damp", "damp_wd", "damp_max"])
def test_first_step_is_not_dampened(compiled, kw):
    _compare(_tj_run(set(), False, compiled, **kw), _torch_run(set(), False, **kw))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("bad", [{0}, {0, 1}, {0, 3}, {2}], ids=str)
def test_scaler_skipped_steps_do_not_count_as_the_first(compiled, bad):
    kw = KW[0]
    _compare(_tj_run(bad, True, compiled, **kw), _torch_run(bad, True, **kw))


@pytest.mark.parametrize("bad", [{0}, {0, 1}, {0, 1, 2}, {1}], ids=str)
def test_masked_steps_decide_at_run_time(bad):
    """Without reading the optimizer's state between calls, the compiled step traces at most
    twice (the first step's form, then the buffer's) and decides at run time whether a buffer
    was ever set."""
    kw = KW[0]
    _compare(_tj_run(bad, True, True, read_state=False, **kw), _torch_run(bad, True, **kw))
    assert len(TRACES) == 2


def test_skipped_compiled_first_step_then_eager_steps():
    """A compiled step that skipped the first update, then plain eager steps (the eager
    update must also see that the buffer was never set)."""
    kw = KW[0]
    p = [tj.tensor(w, requires_grad=True) for w in _weights()]
    opt = tj.optim.SGD(p, lr=0.1, **kw)
    scaler = tj.amp.GradScaler("cpu", init_scale=4.0, growth_interval=100)

    @tj.compile
    def scaled_step(x, y):
        opt.zero_grad()
        loss = ((x @ p[0] + p[1] - y) ** 2).mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    tp = [torch.tensor(w, requires_grad=True) for w in _weights()]
    topt = torch.optim.SGD(tp, lr=0.1, **kw)
    scaled_step(*(tj.tensor(a) for a in _data(0, {0})))           # skipped by both
    for step in range(1, 4):
        x, y = _data(step, set())
        opt.zero_grad()
        ((tj.tensor(x) @ p[0] + p[1] - tj.tensor(y)) ** 2).mean().backward()
        opt.step()
        topt.zero_grad()
        ((torch.tensor(x) @ tp[0] + tp[1] - torch.tensor(y)) ** 2).mean().backward()
        topt.step()
        for a, b in zip(p, tp):
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12,
                                       atol=1e-12, err_msg=f"step {step}")
