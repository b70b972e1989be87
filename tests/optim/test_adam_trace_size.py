"""Adam(W)'s update traced inside a compiled step makes its hyperparameter operands once per
parameter dtype, not once per parameter (tracing cost of a compiled training step); the
update stays torch's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tracejit as tj
from tracejit.tracer.trace import trace


def _models(lib):
    lib.manual_seed(0)
    return lib.nn.Sequential(lib.nn.Linear(4, 8), lib.nn.Tanh(), lib.nn.Linear(8, 3),
                             lib.nn.Tanh(), lib.nn.Linear(3, 1))


def _step(model, opt):
    def step(x):
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return step


@pytest.mark.parametrize("kind", ["AdamW", "Adam"])
def test_hyperparameter_operands_are_traced_once(kind):
    model = _models(tj)
    opt = getattr(tj.optim, kind)(model.parameters(), lr=1e-2, weight_decay=0.1)
    x = tj.tensor(np.ones((2, 4), np.float32))
    g = trace(_step(model, opt), (x,), {}, None, "step").graph
    # |1 - beta1| < 0.5 (torch's lerp branch) is one abs for all 6 parameters
    assert sum(ins.prim.name == "abs" for ins in g.instrs) == 1


@pytest.mark.parametrize("kind", ["AdamW", "Adam"])
def test_compiled_steps_match_torch(kind):
    w = {k: v.detach().numpy() for k, v in _models(torch).state_dict().items()}
    models = []
    for lib in (tj, torch):
        m = _models(lib)
        m.load_state_dict({k: lib.tensor(v) for k, v in w.items()})
        opt = getattr(lib.optim, kind)(m.parameters(), lr=1e-2, weight_decay=0.1,
                                       betas=(0.8, 0.95))
        models.append((m, _step(m, opt)))
    step_tj = tj.compile(models[0][1])
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    for _ in range(3):
        a = step_tj(tj.tensor(x)).item()
        b = models[1][1](torch.tensor(x)).item()
        np.testing.assert_allclose(a, b, rtol=1e-5)
    for (k, p), (_, q) in zip(models[0][0].state_dict().items(),
                              models[1][0].state_dict().items()):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=k)
