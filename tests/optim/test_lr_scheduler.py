"""tj.optim.lr_scheduler against torch.optim.lr_scheduler: the same learning rates, exactly,
step by step (chainable form) and with step(epoch) (closed form), per param group."""
import warnings

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

SCHEDULERS = [
    ("StepLR", dict(step_size=3)),
    ("StepLR", dict(step_size=4, gamma=0.5)),
    ("CosineAnnealingLR", dict(T_max=7)),
    ("CosineAnnealingLR", dict(T_max=5, eta_min=0.01)),
    ("LambdaLR", dict(lr_lambda=lambda e: 0.9 ** e)),
    ("LinearLR", dict()),
    ("LinearLR", dict(start_factor=0.25, end_factor=0.9, total_iters=10)),
]


def _ids(case):
    return case[0] + "-" + ",".join(f"{k}={v}" for k, v in case[1].items() if k != "lr_lambda")


def _run(lib, name, kw, steps=30, closed=False):
    groups = [{"params": [lib.zeros(1, requires_grad=True)], "lr": 0.1 * (i + 1)}
              for i in range(2)]
    opt = lib.optim.SGD(groups, lr=0.5)
    sched = getattr(lib.optim.lr_scheduler, name)(opt, **kw)
    rows = [sched.get_last_lr() + [sched.last_epoch]]
    for i in range(steps):
        opt.step()
        if closed:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sched.step(i + 1)
        else:
            sched.step()
        rows.append(sched.get_last_lr() + [g["lr"] for g in opt.param_groups]
                    + [sched.last_epoch])
    return rows, sched


@pytest.mark.parametrize("case", SCHEDULERS, ids=_ids)
@pytest.mark.parametrize("closed", [False, True], ids=["chainable", "closed_form"])
def test_lr_sequence_matches_torch_exactly(case, closed):
    name, kw = case
    want, tsched = _run(torch, name, kw, closed=closed)
    got, sched = _run(tj, name, kw, closed=closed)
    assert got == want
    assert sched.base_lrs == tsched.base_lrs
    assert set(sched.state_dict()) == set(tsched.state_dict())


def test_lambda_per_group_and_state_dict_round_trip():
    def make(lib):
        groups = [{"params": [lib.zeros(1, requires_grad=True)]},
                  {"params": [lib.zeros(1, requires_grad=True)], "lr": 0.2}]
        opt = lib.optim.SGD(groups, lr=0.1)
        return opt, lib.optim.lr_scheduler.LambdaLR(opt, [lambda e: 1 / (e + 1),
                                                          lambda e: 0.5 ** e])

    opt, sched = make(tj)
    topt, tsched = make(torch)
    for _ in range(5):
        opt.step()
        sched.step()
        topt.step()
        tsched.step()
    assert sched.get_last_lr() == tsched.get_last_lr()
    sd = sched.state_dict()
    assert sd["lr_lambdas"] == [None, None] and sd["last_epoch"] == 5
    opt2, sched2 = make(tj)
    sched2.load_state_dict(sd)
    for g, lr in zip(opt2.param_groups, sched.get_last_lr()):
        g["lr"] = lr
    for s, o in ((sched, opt), (sched2, opt2)):
        o.step()
        s.step()
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_scheduler_before_optimizer_warns_as_torch():
    opt = tj.optim.SGD([tj.zeros(1, requires_grad=True)], lr=0.1)
    sched = tj.optim.lr_scheduler.StepLR(opt, step_size=1)
    with pytest.warns(UserWarning, match=r"before `optimizer.step\(\)`"):
        sched.step()


def test_lr_changes_reach_the_fused_step_without_recompiling():
    w = tj.tensor(np.ones(4), requires_grad=True)
    tw = torch.tensor(np.ones(4), requires_grad=True)
    opt, topt = tj.optim.Adam([w], lr=0.1), torch.optim.Adam([tw], lr=0.1, foreach=False)
    sched = tj.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=6)
    tsched = torch.optim.lr_scheduler.LinearLR(topt, start_factor=0.1, total_iters=6)
    tj.clear_cache()
    for t in range(10):
        w.grad, tw.grad = tj.tensor(np.arange(4.0) - t), torch.tensor(np.arange(4.0) - t)
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
    np.testing.assert_allclose(w.detach().numpy(), tw.detach().numpy(), rtol=1e-12)
    assert opt.cache_info().misses == 1


def test_errors_as_torch():
    opt = tj.optim.SGD([tj.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="Starting multiplicative factor"):
        tj.optim.lr_scheduler.LinearLR(opt, start_factor=0)
    with pytest.raises(TypeError, match="is not an Optimizer"):
        tj.optim.lr_scheduler.StepLR(object(), step_size=1)
    with pytest.raises(KeyError, match="initial_lr"):
        tj.optim.lr_scheduler.StepLR(opt, step_size=1, last_epoch=3)
    with pytest.raises(ValueError, match="Expected 1 lr_lambdas"):
        tj.optim.lr_scheduler.LambdaLR(opt, [lambda e: 1, lambda e: 2])
