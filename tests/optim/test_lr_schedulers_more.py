"""MultiStepLR, ExponentialLR, ConstantLR, SequentialLR, OneCycleLR and ReduceLROnPlateau
against torch.optim.lr_scheduler: the same learning rates (and OneCycleLR's momentum / beta1)
after every step for two param groups, the same closed form through the deprecated
step(epoch), state_dict round trips, torch's errors; and a compiled SGD step driven by
OneCycleLR trains as torch's (the lr and momentum are runtime inputs)."""
import warnings

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

SCHEDULES = {
    "multistep": lambda L, o: L.MultiStepLR(o, milestones=[2, 5, 5, 7], gamma=0.5),
    "exponential": lambda L, o: L.ExponentialLR(o, gamma=0.8),
    "constant": lambda L, o: L.ConstantLR(o, factor=0.25, total_iters=3),
    "sequential": lambda L, o: L.SequentialLR(o, [L.LinearLR(o, 0.1, total_iters=3),
                                                  L.ExponentialLR(o, 0.9),
                                                  L.StepLR(o, 2, 0.5)], milestones=[3, 6]),
    "onecycle": lambda L, o: L.OneCycleLR(o, max_lr=[0.5, 0.2], total_steps=12),
    "onecycle3": lambda L, o: L.OneCycleLR(o, max_lr=0.4, epochs=3, steps_per_epoch=4,
                                           pct_start=0.25, anneal_strategy="linear",
                                           three_phase=True),
    "plateau": lambda L, o: L.ReduceLROnPlateau(o, factor=0.5, patience=1, cooldown=1,
                                                min_lr=[0.01, 0.0]),
    "plateau_max": lambda L, o: L.ReduceLROnPlateau(o, mode="max", threshold=0.1,
                                                    threshold_mode="abs", patience=0),
}
METRICS = [5, 4, 4.5, 4.2, 4.1, 4.3, 3.0, 3.5, 3.6, 3.7, 2.9, 3.0]


def _optimizer(lib, kind):
    w1, w2 = lib.nn.Parameter(lib.ones(2)), lib.nn.Parameter(lib.ones(3))
    groups = [{"params": [w1]}, {"params": [w2], "lr": 0.05}]
    if kind == "adam":
        return lib.optim.AdamW(groups, lr=0.1)
    return lib.optim.SGD(groups, lr=0.1, momentum=0.9)


def _trajectory(lib, name, kind, steps=12):
    opt = _optimizer(lib, kind)
    sched = SCHEDULES[name](lib.optim.lr_scheduler, opt)
    seen = []
    for i in range(steps):
        opt.step()
        sched.step(METRICS[i]) if name.startswith("plateau") else sched.step()
        seen.append([float(v) for v in sched.get_last_lr()]
                    + [float(g["momentum"] if kind == "sgd" else g["betas"][0])
                       for g in opt.param_groups])
    return seen, sched


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_learning_rates_match_torch(name, kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want, tsched = _trajectory(torch, name, kind)
        got, sched = _trajectory(tj, name, kind)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert len({tuple(r) for r in want}) > 1              # the schedule did move
    sd = sched.state_dict()
    assert sorted(sd) == sorted(tsched.state_dict())
    opt = _optimizer(tj, kind)
    fresh = SCHEDULES[name](tj.optim.lr_scheduler, opt)
    fresh.load_state_dict(sd)
    assert fresh.last_epoch == sched.last_epoch


@pytest.mark.parametrize("name", ["multistep", "exponential", "constant"])
def test_closed_form_step_epoch_matches_torch(name):
    got = []
    for lib in (torch, tj):
        opt = _optimizer(lib, "sgd")
        sched = SCHEDULES[name](lib.optim.lr_scheduler, opt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for epoch in (4, 1, 6, 9):
                opt.step()
                sched.step(epoch)
                got.append(sched.get_last_lr())
    half = len(got) // 2
    np.testing.assert_allclose(got[half:], got[:half], rtol=1e-12)


def test_errors_are_torchs():
    L = tj.optim.lr_scheduler
    opt = _optimizer(tj, "sgd")
    with pytest.raises(ValueError, match="between 0 and 1"):
        L.ConstantLR(opt, factor=1.5)
    with pytest.raises(ValueError, match="total_steps OR"):
        L.OneCycleLR(opt, max_lr=0.1)
    with pytest.raises(ValueError, match="max_lr must have the same length"):
        L.OneCycleLR(opt, max_lr=[0.1, 0.2, 0.3], total_steps=5)
    with pytest.raises(ValueError, match="Factor should be < 1.0"):
        L.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="does not support `ReduceLROnPlateau`"):
        L.SequentialLR(opt, [L.ExponentialLR(opt, 0.9), L.ReduceLROnPlateau(opt)], [2])
    sched = L.OneCycleLR(opt, max_lr=0.1, total_steps=2)
    opt.step()
    sched.step()
    sched.step()
    with pytest.raises(ValueError, match="Tried to step 3 times"):
        sched.step()


def test_compiled_sgd_step_with_onecycle_trains_as_torch():
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((6, 8, 4)), rng.standard_normal((6, 8, 2))
    torch.manual_seed(0)
    tmodel = torch.nn.Linear(4, 2).double()
    model = tj.nn.Linear(4, 2).double()
    model.load_state_dict({k: v.detach().numpy() for k, v in tmodel.state_dict().items()})
    runs = []
    for lib, m in ((torch, tmodel), (tj, model)):
        opt = lib.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        sched = lib.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=6)

        def step(x, y):
            loss = lib.nn.functional.mse_loss(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss
        if lib is tj:
            step = tj.compile(step)
        losses = []
        for x, y in zip(xs, ys):
            losses.append(step(lib.tensor(x), lib.tensor(y)).item())
            sched.step()
        runs.append((losses, [p.detach().numpy().copy() for p in m.parameters()]))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-12)
    for got, want in zip(runs[1][1], runs[0][1]):
        np.testing.assert_allclose(got, want, rtol=1e-12)
