"""CyclicLR (triangular, triangular2, exp_range, a custom scale_fn; momentum / beta1 cycling on
and off), CosineAnnealingWarmRestarts (T_mult 1 and 2, eta_min, fractional step(epoch)) and
PolynomialLR (chainable and closed form) against torch.optim.lr_scheduler: the same learning
rates (and momenta) after each of 30 steps for two param groups, state dict round trips,
torch's errors; and a compiled Adam training step driven by CyclicLR (lr and beta1 runtime
inputs: one trace) trains as torch's."""
import warnings

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")


class _Halving:
    """A callable object as scale_fn: its attributes travel in CyclicLR's state dict."""

    def __init__(self) -> None:
        self.base = 2.0

    def __call__(self, x: float) -> float:
        return self.base ** -x


SCHEDULES = {
    "tri": lambda L, o: L.CyclicLR(o, base_lr=0.01, max_lr=[0.1, 0.2], step_size_up=4,
                                   cycle_momentum=False),
    "tri_mom": lambda L, o: L.CyclicLR(o, base_lr=[0.01, 0.02], max_lr=0.1, step_size_up=3,
                                       step_size_down=5),
    "tri2": lambda L, o: L.CyclicLR(o, 0.01, 0.1, step_size_up=3, mode="triangular2",
                                    base_momentum=[0.7, 0.75], max_momentum=0.95),
    "exp_range": lambda L, o: L.CyclicLR(o, 0.01, 0.1, step_size_up=2, step_size_down=4,
                                         mode="exp_range", gamma=0.9),
    "custom": lambda L, o: L.CyclicLR(o, 0.01, 0.1, step_size_up=3, scale_fn=_Halving(),
                                      scale_mode="iterations", cycle_momentum=False),
    "warm1": lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=7, eta_min=0.001),
    "warm2": lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2),
    "poly": lambda L, o: L.PolynomialLR(o, total_iters=20, power=2.0),
    "poly_lin": lambda L, o: L.PolynomialLR(o),
}
STEPS = 30


def _optimizer(lib, kind):
    w1, w2 = lib.nn.Parameter(lib.ones(2)), lib.nn.Parameter(lib.ones(3))
    groups = [{"params": [w1]}, {"params": [w2], "lr": 0.05}]
    if kind == "adam":
        return lib.optim.Adam(groups, lr=0.1)
    return lib.optim.SGD(groups, lr=0.1, momentum=0.9)


def _trajectory(lib, name, kind):
    opt = _optimizer(lib, kind)
    sched = SCHEDULES[name](lib.optim.lr_scheduler, opt)
    seen = []
    for _ in range(STEPS):
        opt.step()
        sched.step()
        seen.append([float(v) for v in sched.get_last_lr()]
                    + [float(g["momentum"] if kind == "sgd" else g["betas"][0])
                       for g in opt.param_groups])
    return seen, sched, opt


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_learning_rates_match_torch(name, kind):
    want, tsched, topt = _trajectory(torch, name, kind)
    got, sched, opt = _trajectory(tj, name, kind)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert len({tuple(r[:2]) for r in want}) >= 4          # the schedule did move
    for g, tg in zip(opt.param_groups, topt.param_groups):
        assert sorted(g) == sorted(tg)          # (CyclicLR's max_momentum etc. as torch's)
    sd, tsd = sched.state_dict(), tsched.state_dict()
    assert sorted(sd) == sorted(tsd)
    # a fresh scheduler loaded from the state dict continues the same schedule
    fresh_opt = _optimizer(tj, kind)
    fresh = SCHEDULES[name](tj.optim.lr_scheduler, fresh_opt)
    fresh.load_state_dict(sd)
    for g, f in zip(opt.param_groups, fresh_opt.param_groups):
        f["lr"] = g["lr"]
    for _ in range(5):
        for s, o in ((fresh, fresh_opt), (tsched, topt)):
            o.step()
            s.step()
        np.testing.assert_allclose(fresh.get_last_lr(), tsched.get_last_lr(), rtol=1e-12)


def test_cyclic_custom_scale_fn_state_travels():
    opt = _optimizer(tj, "sgd")
    sched = SCHEDULES["custom"](tj.optim.lr_scheduler, opt)
    sched._scale_fn_custom.base = 3.0
    sd = sched.state_dict()
    assert sd["_scale_fn_custom"] == {"base": 3.0}
    fresh = SCHEDULES["custom"](tj.optim.lr_scheduler, _optimizer(tj, "sgd"))
    fresh.load_state_dict(sd)
    assert fresh._scale_fn_custom.base == 3.0
    lam = tj.optim.lr_scheduler.CyclicLR(opt, 0.01, 0.1, scale_fn=lambda x: 1.0,
                                         cycle_momentum=False)
    assert lam.state_dict()["_scale_fn_custom"] is None          # (as torch: not saved)


@pytest.mark.parametrize("name", ["warm1", "warm2", "poly"])
def test_step_epoch_matches_torch(name):
    got = []
    for lib in (torch, tj):
        opt = _optimizer(lib, "sgd")
        sched = SCHEDULES[name](lib.optim.lr_scheduler, opt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for epoch in (4, 1, 6.5, 9, 22.25, 3, 40):
                if name == "poly" and epoch != int(epoch):
                    continue
                opt.step()
                sched.step(epoch)
                got.append(list(sched.get_last_lr()) + [sched.last_epoch])
    half = len(got) // 2
    np.testing.assert_allclose(got[half:], got[:half], rtol=1e-12)


def test_errors_are_torchs():
    L = tj.optim.lr_scheduler
    cases = [(lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=0)),
             (lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=2.5)),
             (lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=0)),
             (lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=3, eta_min="0")),
             (lambda M, o: M.CyclicLR(o, 0.01, 0.1, mode="sawtooth")),
             (lambda M, o: M.CyclicLR(o, [0.01, 0.02, 0.03], 0.1)),
             (lambda M, o: M.CyclicLR(o, 0.01, [0.1])),
             (lambda M, o: M.CyclicLR(o, 0.01, 0.1, base_momentum=[0.8])),
             (lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=3).step(-1))]
    for make in cases:
        with pytest.raises(ValueError) as want:
            make(torch.optim.lr_scheduler, _optimizer(torch, "sgd"))
        with pytest.raises(ValueError) as got:
            make(L, _optimizer(tj, "sgd"))
        assert str(got.value) == str(want.value)
    for lib in (torch, tj):
        w = lib.nn.Parameter(lib.ones(2))
        with pytest.raises(ValueError, match="must support momentum or beta1"):
            lib.optim.lr_scheduler.CyclicLR(lib.optim.Adagrad([w]), 0.01, 0.1)
        with pytest.raises(TypeError, match="is not an Optimizer"):
            lib.optim.lr_scheduler.CyclicLR(object(), 0.01, 0.1)


def test_compiled_adam_step_with_cyclic_lr_and_beta1_trains_as_torch():
    rng = np.random.default_rng(0)
    xs, ys = rng.standard_normal((12, 8, 4)), rng.standard_normal((12, 8, 2))
    torch.manual_seed(0)
    tmodel = torch.nn.Linear(4, 2).double()
    model = tj.nn.Linear(4, 2).double()
    model.load_state_dict({k: v.detach().numpy() for k, v in tmodel.state_dict().items()})
    runs = []
    for lib, m in ((torch, tmodel), (tj, model)):
        opt = lib.optim.Adam(m.parameters(), lr=0.1, foreach=False)
        sched = lib.optim.lr_scheduler.CyclicLR(opt, 0.01, 0.2, step_size_up=3,
                                                mode="triangular2")

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
        if lib is tj:
            assert step.cache_info().misses == 1     # lr and beta1 are runtime inputs
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-12)
    for got, want in zip(runs[1][1], runs[0][1]):
        np.testing.assert_allclose(got, want, rtol=1e-12)
