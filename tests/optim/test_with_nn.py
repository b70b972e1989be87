"""tj.optim with tj.nn modules: a model loaded from torch's weights, trained by each framework
(its own autograd, optimizer and scheduler), gives the same losses and parameters."""
import numpy as np
import pytest

import tracejit as tj
from mlp_twin import mlp_twin

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("opt_name,kw,sched,skw", [
    ("AdamW", dict(lr=0.01, weight_decay=0.1), "CosineAnnealingLR", dict(T_max=20)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True), "StepLR", dict(step_size=7, gamma=0.5)),
    ("Adam", dict(lr=0.01, amsgrad=True), "LinearLR", dict(start_factor=0.2, total_iters=10)),
])
def test_module_training_matches_torch(opt_name, kw, sched, skw):
    tm, m, x, y = mlp_twin()
    runs = []
    for lib, model in ((torch, tm), (tj, m)):
        opt = getattr(lib.optim, opt_name)(model.parameters(), **kw)
        s = getattr(lib.optim.lr_scheduler, sched)(opt, **skw)
        X, Y = lib.tensor(x), lib.tensor(y)
        losses = []
        for _ in range(30):
            opt.zero_grad()
            loss = ((model(X) - Y) ** 2).mean()
            loss.backward()
            opt.step()
            s.step()
            losses.append(loss.item())
        runs.append((losses, [p.detach().numpy() for p in model.parameters()]))
    (la, pa), (lb, pb) = runs
    np.testing.assert_allclose(lb, la, rtol=1e-10)
    for a, b in zip(pa, pb):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
