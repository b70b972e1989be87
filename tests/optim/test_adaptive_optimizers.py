"""RMSprop (alpha, eps, weight decay, momentum, centered, maximize), Adagrad (lr_decay,
initial_accumulator_value, weight decay) and Adadelta (rho, weight decay, maximize) against
torch.optim: 20-step float64 trajectories of two param groups agree to rounding, float32 to
float32 tolerance, the state dicts have torch's keys and a torch state dict loads and continues
the same trajectory; eagerly and as a whole compiled step (runtime lr: no retrace)."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

CONFIGS = [
    ("RMSprop", {}), ("RMSprop", dict(momentum=0.9, weight_decay=0.01)),
    ("RMSprop", dict(centered=True, alpha=0.9, eps=1e-6, momentum=0.5, maximize=True)),
    ("Adagrad", {}), ("Adagrad", dict(lr_decay=0.05, weight_decay=0.1,
                                      initial_accumulator_value=0.3)),
    ("Adadelta", {}), ("Adadelta", dict(lr=0.5, rho=0.8, weight_decay=0.01, maximize=True)),
]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)]


def _problem(lib, dtype):
    rng = np.random.default_rng(0)
    w = lib.nn.Parameter(lib.tensor(rng.standard_normal((3, 4)).astype(dtype)))
    b = lib.nn.Parameter(lib.tensor(rng.standard_normal(4).astype(dtype)))
    x = lib.tensor(rng.standard_normal((6, 3)).astype(dtype))
    y = lib.tensor(rng.standard_normal((6, 4)).astype(dtype))
    return [w, b], lambda: ((x @ w + b - y) ** 2).mean()


def _run(lib, name, kw, dtype, steps=20, compiled=False, start_state=None):
    params, loss_fn = _problem(lib, dtype)
    opt = getattr(lib.optim, name)([{"params": [params[0]]},
                                    {"params": [params[1]], "lr": 0.05}], **kw)
    if start_state is not None:
        opt.load_state_dict(start_state)

    def step():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss
    if compiled:
        step = tj.compile(step)
    losses = [step().item() for _ in range(steps)]
    return losses, [p.detach().numpy().copy() for p in params], opt


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled_step"])
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_float64_trajectory_matches_torch(name, kw, compiled):
    want_losses, want, topt = _run(torch, name, kw, np.float64)
    losses, got, opt = _run(tj, name, kw, np.float64, compiled=compiled)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-10)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    tsd, sd = topt.state_dict(), opt.state_dict()
    assert sd["param_groups"] == tsd["param_groups"]
    for k in tsd["state"]:
        assert sorted(sd["state"][k]) == sorted(tsd["state"][k])
        for s in tsd["state"][k]:
            np.testing.assert_allclose(np.asarray(sd["state"][k][s].numpy()),
                                       tsd["state"][k][s].numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_float32_trajectory_matches_torch(name, kw):
    want_losses, want, _ = _run(torch, name, kw, np.float32)
    losses, got, _ = _run(tj, name, kw, np.float32)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,kw", [CONFIGS[2], CONFIGS[4], CONFIGS[6]], ids=IDS[2:7:2])
def test_torch_state_dict_loads_and_continues(name, kw):
    _, _, topt = _run(torch, name, kw, np.float64, steps=5)
    tsd = topt.state_dict()
    # (copies: torch's load_state_dict adopts same-dtype state tensors and updates them)
    sd = {"param_groups": tsd["param_groups"],
          "state": {k: {s: (v.numpy().copy() if s != "step" else v.item())
                        for s, v in st.items()} for k, st in tsd["state"].items()}}
    want_losses, want, _ = _run(torch, name, kw, np.float64, steps=5, start_state=tsd)
    losses, got, _ = _run(tj, name, kw, np.float64, steps=5, start_state=sd)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-10)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)


def test_bad_arguments_raise_torchs_errors():
    p = [tj.nn.Parameter(tj.zeros(2))]
    with pytest.raises(ValueError, match="Invalid learning rate"):
        tj.optim.RMSprop(p, lr=-1)
    with pytest.raises(ValueError, match="Invalid alpha value"):
        tj.optim.RMSprop(p, alpha=-0.1)
    with pytest.raises(ValueError, match="Invalid lr_decay value"):
        tj.optim.Adagrad(p, lr_decay=-1)
    with pytest.raises(ValueError, match="Invalid rho value"):
        tj.optim.Adadelta(p, rho=1.5)
