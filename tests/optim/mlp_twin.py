"""A small float64 MLP regression for optimizer tests: a torch model, its tracejit twin holding
the same weights, and data (shared by the optimizer tests that train both side by side)."""
import numpy as np

import tracejit as tj
from tracejit import nn


def mlp_twin():
    """(torch model, tracejit model, x [32, 4], y [32, 1]): Linear(4, 16), Tanh, Linear(16, 1)
    in float64, initialised under torch.manual_seed(0); the target is sin of x's row sums."""
    import torch
    torch.manual_seed(0)
    tm = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(),
                             torch.nn.Linear(16, 1)).double()
    m = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    m.load_state_dict({k: tj.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 4))
    return tm, m, x, np.sin(x.sum(1, keepdims=True))
