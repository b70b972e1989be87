"""A small CNN with BatchNorm (Conv2d-BatchNorm2d-ReLU-MaxPool2d twice, then Linear), written
once and run on tracejit and on torch from the same state_dict, trained four steps with
SGD(momentum, nesterov, weight_decay) and cross entropy: losses, parameters, BatchNorm's running
statistics and num_batches_tracked agree after every way of running the step, and so does the
model's output in eval mode afterwards. tracejit runs the step eagerly, with
`tj.compile(model)`, and as one compiled graph (forward, backward, SGD, zero_grad)."""
import numpy as np
import pytest
import torch

import tracejit as tj

STEPS = 4
TOL = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-10, atol=1e-12)}


def make_cnn(lib):
    """The model as one would write it in PyTorch; `lib` is torch or tracejit."""
    nn = lib.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, kernel_size=3, padding="same", bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(8 * 3 * 3, 3),
    )


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((5, 1, 12, 12)) for _ in range(STEPS + 1)]
    ys = [rng.integers(0, 3, 5) for _ in range(STEPS)]
    return xs, ys


def _train(lib, model, forward):
    """The training step as written in PyTorch; `forward` is the model or its compiled form."""
    opt = lib.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                        weight_decay=5e-4)

    def step(x, y):
        loss = lib.nn.functional.cross_entropy(forward(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss
    return opt, step


def _state(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _run(lib, model, mode, xs, ys, dtype):
    tensor = torch.tensor if lib is torch else tj.tensor
    forward = tj.compile(model) if mode == "compiled_model" else model
    _, step = _train(lib, model, forward)
    if mode == "compiled_step":
        step = tj.compile(step)
    model.train()
    losses = [step(tensor(x.astype(dtype)), tensor(y)).item() for x, y in zip(xs, ys)]
    state = _state(model)
    model.eval()
    with lib.no_grad():
        evaluated = forward(tensor(xs[-1].astype(dtype))).numpy()
    return losses, state, evaluated


SLOW = pytest.mark.slow


@pytest.mark.parametrize("mode,dtype", [
    ("eager", "float32"), ("eager", "float64"),
    pytest.param("compiled_model", "float32", marks=SLOW),
    pytest.param("compiled_step", "float32", marks=SLOW),
    pytest.param("compiled_step", "float64", marks=SLOW)])
def test_cnn_with_batchnorm_trains_with_nesterov_sgd_as_torch(mode, dtype):
    xs, ys = _data()
    torch.manual_seed(0)
    tmodel = make_cnn(torch).to(getattr(torch, dtype))
    model = make_cnn(tj).to(getattr(tj, dtype))
    model.load_state_dict(_state(tmodel))
    t_losses, t_state, t_eval = _run(torch, tmodel, "eager", xs, ys, dtype)
    losses, state, evaluated = _run(tj, model, mode, xs, ys, dtype)
    tol = TOL[dtype]
    np.testing.assert_allclose(losses, t_losses, **tol)
    assert list(state) == list(t_state)
    for name, value in state.items():
        assert value.dtype == t_state[name].dtype, name
        np.testing.assert_allclose(value, t_state[name], err_msg=name, **tol)
    assert state["1.num_batches_tracked"] == STEPS
    assert not np.allclose(state["1.running_var"], 1.0)      # the statistics did move
    np.testing.assert_allclose(evaluated, t_eval, **tol)
