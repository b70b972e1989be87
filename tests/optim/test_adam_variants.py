"""NAdam (momentum_decay, coupled and decoupled weight decay, maximize), RAdam (both sides of
the rho_t > 5 rectification, decoupled weight decay) and Adamax against torch.optim: 20-step
float64 trajectories of two param groups agree to rounding, eagerly and as a whole compiled
training step (a new lr every step: one trace); float32 to float32 tolerance; the state dicts
have torch's keys and values, a torch state dict (NAdam's mu_product included) loads and
continues the same trajectory, our own round-trips mid-training; bad hyperparameters raise
torch's ValueErrors."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

CONFIGS = [
    ("NAdam", {}), ("NAdam", dict(weight_decay=0.1, momentum_decay=0.01)),
    ("NAdam", dict(decoupled_weight_decay=True, weight_decay=0.1, maximize=True,
                   betas=(0.8, 0.99), eps=1e-6)),
    ("RAdam", {}), ("RAdam", dict(weight_decay=0.1, decoupled_weight_decay=True)),
    ("RAdam", dict(weight_decay=0.05, maximize=True, betas=(0.8, 0.9), eps=1e-6)),
    ("Adamax", {}), ("Adamax", dict(weight_decay=0.1, betas=(0.8, 0.9), maximize=True)),
]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)]


def _problem(lib, dtype):
    rng = np.random.default_rng(0)
    w = lib.nn.Parameter(lib.tensor(rng.standard_normal((3, 4)).astype(dtype)))
    b = lib.nn.Parameter(lib.tensor(rng.standard_normal(4).astype(dtype)))
    x = lib.tensor(rng.standard_normal((6, 3)).astype(dtype))
    y = lib.tensor(rng.standard_normal((6, 4)).astype(dtype))
    return [w, b], lambda: ((x @ w + b - y) ** 2).mean()


def _run(lib, name, kw, dtype, steps=20, compiled=False, start_state=None, lr_every_step=False):
    params, loss_fn = _problem(lib, dtype)
    extra = {"foreach": False}        # (torch on the host: its single-tensor code)
    opt = getattr(lib.optim, name)([{"params": [params[0]]},
                                    {"params": [params[1]], "lr": 0.05}], **kw, **extra)
    if start_state is not None:
        opt.load_state_dict(start_state)

    def step():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss
    run = tj.compile(step) if compiled else step
    losses = []
    for t in range(steps):
        if lr_every_step:
            opt.param_groups[0]["lr"] = 0.01 / (1 + t)
        losses.append(run().item())
    return losses, [p.detach().numpy().copy() for p in params], opt, run


def _same_state(sd, tsd):
    assert sd["param_groups"] == tsd["param_groups"]
    assert sorted(sd["state"]) == sorted(tsd["state"])
    for k in tsd["state"]:
        assert sorted(sd["state"][k]) == sorted(tsd["state"][k])
        for s, v in tsd["state"][k].items():
            mine = np.asarray(sd["state"][k][s].numpy())
            assert mine.dtype == v.numpy().dtype, (s, mine.dtype, v.dtype)
            np.testing.assert_allclose(mine, v.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled_step"])
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_float64_trajectory_matches_torch(name, kw, compiled):
    want_losses, want, topt, _ = _run(torch, name, kw, np.float64, lr_every_step=True)
    losses, got, opt, run = _run(tj, name, kw, np.float64, compiled=compiled,
                                 lr_every_step=True)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-10)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    _same_state(opt.state_dict(), topt.state_dict())
    if compiled:
        # a new learning rate every step is a runtime input: the step traced once
        assert run.cache_info().misses == 1


def test_radam_takes_both_branches():
    """rho_t passes 5 at step 6 with beta2 = 0.999: the first steps are unrectified SGD with
    momentum, the later ones rectified (the trajectory test covers both)."""
    b2 = 0.999
    rho_inf = 2 / (1 - b2) - 1
    rho = [rho_inf - 2 * t * b2 ** t / (1 - b2 ** t) for t in range(1, 21)]
    assert min(rho) < 5 < max(rho)


@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_float32_trajectory_matches_torch(name, kw):
    want_losses, want, _, _ = _run(torch, name, kw, np.float32)
    losses, got, _, _ = _run(tj, name, kw, np.float32)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def _plain(tsd):
    # (copies: torch's load_state_dict adopts same-dtype state tensors and updates them)
    return {"param_groups": tsd["param_groups"],
            "state": {k: {s: (v.numpy().copy() if s != "step" else v.item())
                          for s, v in st.items()} for k, st in tsd["state"].items()}}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled_step"])
@pytest.mark.parametrize("name,kw", [CONFIGS[2], CONFIGS[4], CONFIGS[7]],
                         ids=[IDS[2], IDS[4], IDS[7]])
def test_torch_state_dict_loads_and_continues(name, kw, compiled):
    _, _, topt, _ = _run(torch, name, kw, np.float64, steps=5)
    tsd = topt.state_dict()
    sd = _plain(tsd)
    want_losses, want, topt2, _ = _run(torch, name, kw, np.float64, steps=5, start_state=tsd)
    losses, got, opt2, _ = _run(tj, name, kw, np.float64, steps=5, start_state=sd,
                                compiled=compiled)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-10)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    _same_state(opt2.state_dict(), topt2.state_dict())


def _round_trip(lib, name, kw):
    """5 steps, state_dict into a fresh optimizer over the same parameters, 5 more steps."""
    params, loss_fn = _problem(lib, np.float64)
    groups = [{"params": [params[0]]}, {"params": [params[1]], "lr": 0.05}]
    opt = getattr(lib.optim, name)(groups, **kw, foreach=False)

    def step(o):
        o.zero_grad()
        loss_fn().backward()
        o.step()
    for _ in range(5):
        step(opt)
    opt2 = getattr(lib.optim, name)([{"params": [params[0]]}, {"params": [params[1]]}])
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[1]["lr"] == 0.05
    for _ in range(5):
        step(opt2)
    return [p.detach().numpy().copy() for p in params], opt2


@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_own_state_dict_round_trip_mid_training(name, kw):
    """Torch's round trip and ours agree; both are 10 straight steps up to NAdam's
    mu_product, which load_state_dict turns into a float64 tensor (a float64 parameter's
    dtype) in torch as in tracejit, so it rounds differently from then on."""
    _, straight, _, _ = _run(tj, name, kw, np.float64, steps=10)
    got, opt = _round_trip(tj, name, kw)
    want, topt = _round_trip(torch, name, kw)
    for g, w, s in zip(got, want, straight):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g, s, rtol=1e-8 if name == "NAdam" else 1e-12, atol=1e-14)
    _same_state(opt.state_dict(), topt.state_dict())


BAD = [dict(lr=-1.0), dict(eps=-1e-8), dict(betas=(1.0, 0.999)), dict(betas=(0.9, -0.1)),
       dict(weight_decay=-0.1)]


@pytest.mark.parametrize("name", ["NAdam", "RAdam", "Adamax"])
def test_bad_hyperparameters_raise_torchs_errors(name):
    cases = BAD + ([dict(momentum_decay=-1.0)] if name == "NAdam" else [])
    for kw in cases:
        with pytest.raises(ValueError) as want:
            getattr(torch.optim, name)([torch.zeros(2, requires_grad=True)], **kw)
        with pytest.raises(ValueError) as got:
            getattr(tj.optim, name)([tj.nn.Parameter(tj.zeros(2))], **kw)
        assert str(got.value) == str(want.value)
    with pytest.raises(NotImplementedError, match="differentiable"):
        getattr(tj.optim, name)([tj.nn.Parameter(tj.zeros(2))], differentiable=True)


@pytest.mark.parametrize("name", ["NAdam", "RAdam", "Adamax"])
def test_defaults_as_torch(name):
    t = getattr(torch.optim, name)([torch.zeros(2, requires_grad=True)])
    o = getattr(tj.optim, name)([tj.nn.Parameter(tj.zeros(2))])
    assert o.defaults == t.defaults


@pytest.mark.parametrize("name,kw", [CONFIGS[1], CONFIGS[5], CONFIGS[7]],
                         ids=[IDS[1], IDS[5], IDS[7]])
def test_compiled_grad_scaler_step_skips_as_torch(name, kw):
    """A compiled float32 step through GradScaler: steps with an inf or NaN gradient leave the
    parameters, moments, step counts and NAdam's mu_product as they were (the state writes
    are masked, not branched), the others match torch's; one trace."""
    bad = {2, 3, 6}
    runs = []
    for lib in (torch, tj):
        params, loss_fn = _problem(lib, np.float32)
        opt = getattr(lib.optim, name)(params, **kw, foreach=False)
        scaler = lib.amp.GradScaler("cpu", init_scale=2.0 ** 8, growth_interval=2)

        def step(poison):
            opt.zero_grad()
            scaler.scale(loss_fn() * poison).backward()
            scaler.step(opt)
            scaler.update()
        run = tj.compile(step) if lib is tj else step
        for t in range(9):
            poison = lib.tensor(np.float32(np.inf if t in bad else 1.0))
            before = {k: v.clone() for k, v in opt.state[params[0]].items()}
            run(poison)
            if t in bad and before:
                for k, v in opt.state[params[0]].items():
                    np.testing.assert_array_equal(v.numpy(), before[k].numpy())
        runs.append(([p.detach().numpy().copy() for p in params],
                     {k: v.numpy().copy() for k, v in opt.state[params[0]].items()},
                     scaler.get_scale()))
        if lib is tj:
            assert run.cache_info().misses == 1
    (want, tstate, tscale), (got, state, scale) = runs
    assert scale == tscale
    assert state["step"] == tstate["step"] == 9 - len(bad)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    for k in tstate:
        np.testing.assert_allclose(state[k], tstate[k], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["NAdam", "RAdam", "Adamax"])
def test_state_lives_on_the_device_and_the_group_is_one_call(name, fake_gpu, monkeypatch):
    from tracejit.runtime.cuda_backend import CudaExecutable
    ps = [tj.tensor(np.ones((30, 30)), requires_grad=True, device="cuda") for _ in range(3)]
    for p in ps:
        p.grad = tj.ones(30, 30, dtype=tj.float64, device="cuda")
    calls = []

    def fake_run(self, args):             # the stand-in cannot launch kernels: record the call
        calls.append(self)
        return [a for a in args[:len(self.graph.outputs)]]

    monkeypatch.setattr(CudaExecutable, "run", fake_run)
    opt = getattr(tj.optim, name)(ps, lr=0.1)
    opt.step()
    assert len(calls) == 1 and isinstance(calls[0], CudaExecutable)
    st = opt.state[ps[0]]
    for k, v in st.items():
        # the moments on the device; the step count (and mu_product) on the host, as torch's
        assert v.device == ("cpu" if k in ("step", "mu_product") else "cuda:0"), k
