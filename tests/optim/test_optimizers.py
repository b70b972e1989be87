"""tj.optim's SGD, Adam and AdamW against torch.optim: 50-step float64 trajectories to 1e-10
(synthetic gradients fed to both, and an MLP whose gradients each framework computes itself),
param groups, state dicts, zero_grad, skipped parameters, errors."""
import copy

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

SHAPES = [(5, 3), (3,), (4, 4), (1,), (0, 2)]
STEPS = 50

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.02)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True)),
    ("SGD", dict(lr=0.05, weight_decay=0.1, maximize=True)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.05, maximize=True)),
    ("Adam", dict(lr=0.01, betas=(0.3, 0.6))),          # lerp's other branch (weight >= 0.5)
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True)),
]


def _ids(case):
    name, kw = case
    return name + "-" + ",".join(f"{k}={v}" for k, v in kw.items())


def _data(seed=0, shapes=SHAPES, steps=STEPS):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]
    return init, grads


def _run(lib, name, kw, init, grads, lrs=None):
    """(each step's parameters, the optimizer): optimizer `name` of `lib` (torch or tracejit)
    stepped once per list of gradients in `grads`, with the learning rate lrs[t] at step t."""
    ps = [lib.tensor(a, requires_grad=True) for a in init]
    extra = {"foreach": False} if lib is torch else {}
    opt = getattr(lib.optim, name)(ps, **extra, **kw)
    traj = []
    for t, gs in enumerate(grads):
        if lrs is not None:
            opt.param_groups[0]["lr"] = lrs[t]
        for p, g in zip(ps, gs):
            p.grad = lib.tensor(g)
        opt.step()
        traj.append([p.detach().numpy().copy() for p in ps])
    return traj, opt


def _torch_run(name, kw, init, grads, lrs=None):
    return _run(torch, name, kw, init, grads, lrs)


def _tj_run(name, kw, init, grads, lrs=None):
    return _run(tj, name, kw, init, grads, lrs)


def _assert_traj(a, b, tol=1e-10):
    for step, (xs, ys) in enumerate(zip(a, b)):
        for x, y in zip(xs, ys):
            assert x.shape == y.shape
            np.testing.assert_allclose(x, y, rtol=tol, atol=tol, err_msg=f"step {step + 1}")


def _assert_state(tj_opt, torch_opt, tol=1e-10):
    a, b = tj_opt.state_dict(), torch_opt.state_dict()
    assert set(a["state"]) == set(b["state"])
    for k, st in b["state"].items():
        assert set(a["state"][k]) == set(st)
        for name, v in st.items():
            mine = a["state"][k][name]
            assert mine.dtype.np == v.numpy().dtype, name
            np.testing.assert_allclose(mine.numpy(), v.numpy(), rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_trajectory_matches_torch(case):
    name, kw = case
    init, grads = _data()
    a, topt = _torch_run(name, kw, init, grads)
    b, opt = _tj_run(name, kw, init, grads)
    _assert_traj(b, a)
    _assert_state(opt, topt)


@pytest.mark.parametrize("case", [CASES[5], CASES[11], CASES[16]], ids=_ids)
def test_lr_changes_every_step_without_recompiling(case):
    name, kw = case
    init, grads = _data(1)
    lrs = [0.02 * (1 + np.sin(t)) + 1e-3 for t in range(STEPS)]
    a, _ = _torch_run(name, kw, init, grads, lrs)
    tj.clear_cache()
    b, opt = _tj_run(name, kw, init, grads[:2], lrs[:2])
    # SGD with momentum has a first-step form of its own (the buffer is a copy of the gradient)
    misses = opt.cache_info().misses
    traj = b
    params = opt.param_groups[0]["params"]
    for t in range(2, STEPS):
        opt.param_groups[0]["lr"] = lrs[t]
        for p, g in zip(params, grads[t]):
            p.grad = tj.tensor(g)
        opt.step()
        traj.append([p.detach().numpy().copy() for p in params])
    _assert_traj(traj, a)
    info = opt.cache_info()
    assert info.misses == misses
    assert info.hits >= STEPS - 2


def test_one_compiled_update_for_the_group():
    init, grads = _data(2, shapes=[(3, 4), (4,), (2, 2)], steps=5)
    tj.clear_cache()
    _, opt = _tj_run("Adam", dict(lr=0.01), init, grads)
    assert len(opt._used) == 1
    assert opt.cache_info() == (4, 1, 1)


def _mlp_init(seed=3):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((4, 8)) * 0.5, rng.standard_normal(8) * 0.1,
            rng.standard_normal((8, 1)) * 0.5, rng.standard_normal(1) * 0.1]


def _mlp_data(seed=4):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((16, 4))
    return x, np.sin(x.sum(1, keepdims=True))


@pytest.mark.parametrize("case", [CASES[3], CASES[4], CASES[10], CASES[15]], ids=_ids)
def test_mlp_training_matches_torch(case):
    """Each framework computes its own gradients of the same loss (eager autograd)."""
    name, kw = case
    x, y = _mlp_data()

    def train(lib, params):
        opt = getattr(lib.optim, name)(params, **kw)
        X, Y = lib.tensor(x), lib.tensor(y)
        losses = []
        for _ in range(STEPS):
            opt.zero_grad()
            h = lib.tanh(X @ params[0] + params[1])
            loss = ((h @ params[2] + params[3] - Y) ** 2).mean()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, [p.detach().numpy() for p in params]

    la, pa = train(torch, [torch.tensor(a, requires_grad=True) for a in _mlp_init()])
    lb, pb = train(tj, [tj.tensor(a, requires_grad=True) for a in _mlp_init()])
    np.testing.assert_allclose(lb, la, rtol=1e-10, atol=1e-12)
    for a, b in zip(pa, pb):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_float32_close_to_torch(name):
    kw = dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.01) if name == "SGD" \
        else dict(lr=0.01, amsgrad=True, weight_decay=0.01)
    init, grads = _data(5)
    init = [a.astype(np.float32) for a in init]
    grads = [[g.astype(np.float32) for g in gs] for gs in grads]
    a, _ = _torch_run(name, kw, init, grads)
    b, opt = _tj_run(name, kw, init, grads)
    assert all(x.dtype == np.float32 for x in b[-1])
    _assert_traj(b, a, tol=2e-5)


def test_param_groups_with_their_own_hyperparameters():
    init, grads = _data(6, shapes=[(3,), (2, 2), (4,)])

    def groups(lib, ps):
        return [{"params": [ps[0]]}, {"params": [ps[1]], "lr": 0.3, "momentum": 0.5},
                {"params": [ps[2]], "lr": 0.01, "weight_decay": 0.1, "nesterov": True,
                 "momentum": 0.9}]

    tps = [torch.tensor(a, requires_grad=True) for a in init]
    mps = [tj.tensor(a, requires_grad=True) for a in init]
    topt = torch.optim.SGD(groups(torch, tps), lr=0.1, momentum=0.7, foreach=False)
    opt = tj.optim.SGD(groups(tj, mps), lr=0.1, momentum=0.7)
    for t, gs in enumerate(grads):
        for lib, ps, o in ((torch, tps, topt), (tj, mps, opt)):
            o.param_groups[1]["lr"] = 0.3 / (1 + t)
            for p, g in zip(ps, gs):
                p.grad = lib.tensor(g)
            o.step()
    for a, b in zip(tps, mps):
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-10)
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1], [2]]
    for g, tg in zip(sd["param_groups"], tsd["param_groups"]):
        assert {**g, "foreach": False} == tg          # (torch's run asked for foreach=False)


@pytest.mark.parametrize("case", [CASES[5], CASES[11], CASES[16]], ids=_ids)
def test_state_dict_round_trip_mid_training(case):
    name, kw = case
    init, grads = _data(7)
    a, _ = _torch_run(name, kw, init, grads)
    ps = [tj.tensor(x, requires_grad=True) for x in init]
    opt = getattr(tj.optim, name)(ps, **kw)
    for gs in grads[:20]:
        for p, g in zip(ps, gs):
            p.grad = tj.tensor(g)
        opt.step()
    saved = copy.deepcopy(opt.state_dict())
    # the state dict's tensors are the optimizer's own (as torch), so the copy is independent
    assert saved["state"][0]["exp_avg" if name != "SGD" else "momentum_buffer"] is not \
        opt.state[ps[0]]["exp_avg" if name != "SGD" else "momentum_buffer"]
    ps2 = [tj.tensor(p.detach().numpy(), requires_grad=True) for p in ps]
    opt2 = getattr(tj.optim, name)(ps2, lr=123.0)      # hyperparameters come from the dict
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == kw["lr"]
    assert opt2.param_groups[0]["params"][0] is ps2[0]
    for gs in grads[20:]:
        for p, g in zip(ps2, gs):
            p.grad = tj.tensor(g)
        opt2.step()
    _assert_traj([[p.detach().numpy() for p in ps2]], [a[-1]])


def test_load_a_torch_state_dict():
    """A torch optimizer's state dict (torch tensors) loads and training continues as torch."""
    name, kw = CASES[16]
    init, grads = _data(8)
    a, _ = _torch_run(name, kw, init, grads)
    tps = [torch.tensor(x, requires_grad=True) for x in init]
    topt = torch.optim.AdamW(tps, foreach=False, **kw)
    for gs in grads[:10]:
        for p, g in zip(tps, gs):
            p.grad = torch.tensor(g)
        topt.step()
    ps = [tj.tensor(p.detach().numpy(), requires_grad=True) for p in tps]
    opt = tj.optim.AdamW(ps, **kw)
    opt.load_state_dict(topt.state_dict())
    assert opt.state[ps[0]]["step"].dtype == tj.float32
    assert opt.state[ps[0]]["step"].item() == 10.0
    for gs in grads[10:]:
        for p, g in zip(ps, gs):
            p.grad = tj.tensor(g)
        opt.step()
    _assert_traj([[p.detach().numpy() for p in ps]], [a[-1]])


def test_zero_grad():
    w = tj.tensor([1.0, 2.0], requires_grad=True)
    opt = tj.optim.SGD([w], lr=0.1)
    (w * w).sum().backward()
    opt.zero_grad()
    assert w.grad is None
    (w * w).sum().backward()
    g = w.grad
    opt.zero_grad(set_to_none=False)
    assert w.grad is g and g.numpy().tolist() == [0.0, 0.0] and not g.requires_grad
    (w * w).sum().backward()
    assert w.grad.numpy().tolist() == [2.0, 4.0]


def test_parameters_without_grad_are_skipped():
    init, grads = _data(9, shapes=[(3,), (2,)], steps=6)
    tps = [torch.tensor(a, requires_grad=True) for a in init]
    mps = [tj.tensor(a, requires_grad=True) for a in init]
    topt = torch.optim.Adam(tps, lr=0.1, foreach=False)
    opt = tj.optim.Adam(mps, lr=0.1)
    for t, gs in enumerate(grads):
        for lib, ps, o in ((torch, tps, topt), (tj, mps, opt)):
            o.zero_grad()
            ps[0].grad = lib.tensor(gs[0])
            if t % 2:                       # the second parameter only every other step
                ps[1].grad = lib.tensor(gs[1])
            o.step()
        if t == 0:
            assert mps[1] not in opt.state and mps[1].detach().numpy().tolist() == init[1].tolist()
    for a, b in zip(tps, mps):
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-10)
    assert opt.state[mps[0]]["step"].item() == 6 and opt.state[mps[1]]["step"].item() == 3


def test_step_is_in_place_and_bumps_the_version():
    w = tj.tensor(np.ones(4), requires_grad=True)
    alias = w.detach()                  # shares w's storage and version counter
    opt = tj.optim.SGD([w], lr=0.5, momentum=0.9)
    v = w._version_count
    w.grad = tj.tensor(np.full(4, 2.0))
    opt.step()
    assert w._version_count > v
    assert alias.numpy().tolist() == [0.0] * 4
    assert opt.state[w]["momentum_buffer"].numpy().tolist() == [2.0] * 4


def test_closure_is_evaluated_with_grad_enabled():
    w = tj.tensor([3.0], requires_grad=True)
    opt = tj.optim.SGD([w], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    with tj.no_grad():
        loss = opt.step(closure)
    assert loss.item() == 9.0 and w.item() == 1.5


def test_many_parameters_in_several_calls_match_torch():
    """More parameter bytes than one host call takes: chunks of the group, same numbers."""
    shapes = [(200, 300)] * 3 + [(7,)] * 5 + [(300, 200)]
    init, grads = _data(10, shapes=shapes, steps=3)
    a, _ = _torch_run("Adam", dict(lr=0.01, amsgrad=True), init, grads)
    b, opt = _tj_run("Adam", dict(lr=0.01, amsgrad=True), init, grads)
    _assert_traj(b, a)
    assert len(opt._used) > 1


def test_repr_and_defaults_as_torch():
    w = tj.tensor([1.0], requires_grad=True)
    tw = torch.tensor([1.0], requires_grad=True)
    for name in ("SGD", "Adam", "AdamW"):
        mine = getattr(tj.optim, name)([w]).param_groups[0]
        theirs = getattr(torch.optim, name)([tw]).param_groups[0]
        assert {k: v for k, v in mine.items() if k != "params"} == \
            {k: v for k, v in theirs.items() if k != "params"}
    assert repr(tj.optim.SGD([w], lr=0.5)) == repr(torch.optim.SGD([tw], lr=0.5))


def test_errors_as_torch():
    w = tj.tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero"):
        tj.optim.SGD([w], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero"):
        tj.optim.SGD([w], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        tj.optim.Adam([w], lr=-1.0)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1"):
        tj.optim.Adam([w], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty parameter list"):
        tj.optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="iterable of Tensors"):
        tj.optim.SGD(w, lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        tj.optim.SGD([w * 2], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        tj.optim.SGD([{"params": [w]}, {"params": [w]}], lr=0.1)
    with pytest.raises(TypeError, match="can only optimize Tensors"):
        tj.optim.SGD([np.ones(2)], lr=0.1)
    opt = tj.optim.SGD([w], lr=0.1)
    with pytest.raises(ValueError, match="different number of parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})
