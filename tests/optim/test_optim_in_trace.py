"""optimizer.step() called inside a compiled function: the same update as traced ops, written
back into the parameters and the state after every call; learning rates (also from a
scheduler) are runtime inputs; changes of the optimizer's structure trace again."""
import numpy as np
import pytest

import tracejit as tj
from mlp_twin import mlp_twin

torch = pytest.importorskip("torch")

SHAPES = [(5, 3), (3,), (1,)]


def _data(seed, steps):
    rng = np.random.default_rng(seed)
    return ([rng.standard_normal(s) for s in SHAPES],
            [[rng.standard_normal(s) for s in SHAPES] for _ in range(steps)])


def _compiled_step(ps, opt):
    @tj.compile
    def step(gs):
        for p, g in zip(ps, gs):
            p.grad = g
        opt.step()
        opt.zero_grad()
    return step


def _close(mine, theirs, tol=1e-10):
    for a, b in zip(mine, theirs):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=tol, atol=tol)


CASES = [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), 2),
         ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.2, maximize=True), 2),
         ("SGD", dict(lr=0.1), 1),
         ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1), 1),
         ("AdamW", dict(lr=0.01, betas=(0.8, 0.95), maximize=True), 1)]


@pytest.mark.parametrize("name,kw,traces", CASES)
def test_compiled_step_matches_torch_with_a_new_lr_every_step(name, kw, traces):
    init, grads = _data(0, 20)
    ps = [tj.tensor(a, requires_grad=True) for a in init]
    opt = getattr(tj.optim, name)(ps, **kw)
    step = _compiled_step(ps, opt)
    tps = [torch.tensor(a, requires_grad=True) for a in init]
    topt = getattr(torch.optim, name)(tps, foreach=False, **kw)
    for t, gs in enumerate(grads):
        lr = kw["lr"] / (1 + t)
        opt.param_groups[0]["lr"] = topt.param_groups[0]["lr"] = lr
        step([tj.tensor(g) for g in gs])
        for p, g in zip(tps, gs):
            p.grad = torch.tensor(g)
        topt.step()
        _close(ps, tps)
    assert all(p.grad is None for p in ps)
    # SGD with momentum traces twice: its first step copies the gradient into the buffer
    assert step.cache_info().misses == traces
    sd, tsd = opt.state_dict()["state"], topt.state_dict()["state"]
    for k in tsd:
        for key, v in tsd[k].items():
            np.testing.assert_allclose(sd[k][key].numpy(), v.numpy(), rtol=1e-10, atol=1e-12)


def test_scheduler_drives_the_compiled_step_without_retracing():
    init, grads = _data(1, 12)
    ps = [tj.tensor(a, requires_grad=True) for a in init]
    opt = tj.optim.AdamW(ps, lr=0.05)
    sched = tj.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=1e-3)
    step = _compiled_step(ps, opt)
    tps = [torch.tensor(a, requires_grad=True) for a in init]
    topt = torch.optim.AdamW(tps, lr=0.05, foreach=False)
    tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=10, eta_min=1e-3)
    for gs in grads:
        step([tj.tensor(g) for g in gs])
        sched.step()
        for p, g in zip(tps, gs):
            p.grad = torch.tensor(g)
        topt.step()
        tsched.step()
    _close(ps, tps)
    assert step.cache_info().misses == 1


def test_changed_flag_traces_again():
    init, grads = _data(2, 6)
    ps = [tj.tensor(a, requires_grad=True) for a in init]
    opt = tj.optim.SGD(ps, lr=0.1, momentum=0.9)
    step = _compiled_step(ps, opt)
    tps = [torch.tensor(a, requires_grad=True) for a in init]
    topt = torch.optim.SGD(tps, lr=0.1, momentum=0.9, foreach=False)
    for t, gs in enumerate(grads):
        if t == 3:
            for o in (opt, topt):
                o.param_groups[0]["nesterov"] = True
                o.param_groups[0]["weight_decay"] = 0.5
        step([tj.tensor(g) for g in gs])
        for p, g in zip(tps, gs):
            p.grad = torch.tensor(g)
        topt.step()
        _close(ps, tps)
    assert step.cache_info().misses == 3


def test_load_state_dict_between_compiled_steps():
    """Loading replaces the state tensors: the compiled step must read the new ones."""
    init, grads = _data(3, 8)
    _, other_grads = _data(4, 3)
    other = [torch.tensor(a, requires_grad=True) for a in init]
    other_opt = torch.optim.Adam(other, lr=0.02, foreach=False)
    for gs in other_grads:                       # a different history to restart from
        for p, g in zip(other, gs):
            p.grad = torch.tensor(g)
        other_opt.step()
    ps = [tj.tensor(a, requires_grad=True) for a in init]
    opt = tj.optim.Adam(ps, lr=0.02)
    step = _compiled_step(ps, opt)
    tps = [torch.tensor(a, requires_grad=True) for a in init]
    topt = torch.optim.Adam(tps, lr=0.02, foreach=False)
    for t, gs in enumerate(grads):
        if t == 4:
            opt.load_state_dict(other_opt.state_dict())
            topt.load_state_dict(other_opt.state_dict())
        step([tj.tensor(g) for g in gs])
        for p, g in zip(tps, gs):
            p.grad = torch.tensor(g)
        topt.step()
        _close(ps, tps)
    assert opt.state[ps[0]]["step"].item() == 7


def test_optimizer_hyperparameters_are_graph_inputs():
    ps = [tj.tensor(np.ones(3), requires_grad=True)]
    opt = tj.optim.Adam(ps, lr=0.1)
    step = _compiled_step(ps, opt)
    text = step.lower([tj.tensor(np.ones(3))]).as_text()
    assert text.count("f64[]") >= 5         # lr, beta1, beta2, eps, weight_decay (and step)
    opt.param_groups[0]["betas"] = (0.5, 0.6)
    opt.param_groups[0]["eps"] = 1e-3
    before = ps[0].detach().numpy().copy()
    step([tj.tensor(np.full(3, 2.0))])
    t = opt.state[ps[0]]["step"].item()
    m = 0.5 * 2.0
    v = 0.4 * 4.0
    want = before - 0.1 / (1 - 0.5 ** t) * m / (np.sqrt(v) / np.sqrt(1 - 0.6 ** t) + 1e-3)
    np.testing.assert_allclose(ps[0].detach().numpy(), want, rtol=1e-12)
    assert step.cache_info().misses == 1


@pytest.mark.parametrize("name,kw,traces", [
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True), 1),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True), 2)])
def test_whole_training_step_compiled_with_a_schedule(name, kw, traces):
    """forward, backward, step and zero_grad in one compiled graph, the lr from a scheduler:
    the same losses and parameters as torch's eager loop."""
    tm, m, x, y = mlp_twin()
    opt = getattr(tj.optim, name)(m.parameters(), **kw)
    topt = getattr(torch.optim, name)(tm.parameters(), foreach=False, **kw)
    sched = tj.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=10)

    @tj.compile
    def train_step(X, Y):
        loss = ((m(X) - Y) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    X, Y, TX, TY = tj.tensor(x), tj.tensor(y), torch.tensor(x), torch.tensor(y)
    for _ in range(12):
        loss = train_step(X, Y)
        sched.step()
        topt.zero_grad()
        tloss = ((tm(TX) - TY) ** 2).mean()
        tloss.backward()
        topt.step()
        tsched.step()
        np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-12)
    _close(list(m.parameters()), list(tm.parameters()))
    assert all(p.grad is None for p in m.parameters())
    assert train_step.cache_info().misses == traces
