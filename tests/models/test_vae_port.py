"""The PyTorch examples' VAE (fc1-relu, fc21/fc22 to mu and logvar, the reparameterisation
`mu + torch.randn_like(std) * std`, fc3-relu-fc4-sigmoid, and loss_function's
F.binary_cross_entropy(reduction='sum') + KLD), shrunk, run on tracejit and on torch from one
state_dict and trained three Adam steps: eagerly and as one compiled step. torch draws its own
noise, so its randn_like is given tracejit's draws (tj.manual_seed before each step makes the
noise of the eager and the compiled step the same numbers)."""
import types

import numpy as np
import pytest

import tracejit as tj
from models.harness import training_step

torch = pytest.importorskip("torch")
D, H, Z, BATCH = 16, 12, 3, 5


def make_vae(lib):
    nn, F = lib.nn, lib.nn.functional

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(D, H)
            self.fc21 = nn.Linear(H, Z)
            self.fc22 = nn.Linear(H, Z)
            self.fc3 = nn.Linear(Z, H)
            self.fc4 = nn.Linear(H, D)

        def encode(self, x):
            h1 = F.relu(self.fc1(x))
            return self.fc21(h1), self.fc22(h1)

        def reparameterize(self, mu, logvar):
            std = lib.exp(0.5 * logvar)
            eps = lib.randn_like(std)
            return mu + eps * std

        def decode(self, z):
            h3 = F.relu(self.fc3(z))
            return lib.sigmoid(self.fc4(h3))

        def forward(self, x):
            mu, logvar = self.encode(x.view(-1, D))
            z = self.reparameterize(mu, logvar)
            return self.decode(z), mu, logvar

    def loss_function(recon_x, x, mu, logvar):
        BCE = F.binary_cross_entropy(recon_x, x.view(-1, D), reduction="sum")
        KLD = -0.5 * lib.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return BCE + KLD

    return VAE(), loss_function


def _noise(step: int) -> np.ndarray:
    """The normals tracejit's randn_like draws as the first random op after manual_seed."""
    tj.manual_seed(100 + step)
    return tj.randn(BATCH, Z, dtype=tj.float64).numpy()


def _torch_with_noise(noise):
    """torch, but randn_like returns the given draws (the model code is unchanged)."""
    lib = types.SimpleNamespace(**{k: getattr(torch, k) for k in ("nn", "exp", "sigmoid", "sum",
                                                                   "optim", "tensor")})
    lib.randn_like = lambda t: torch.tensor(noise[0], dtype=t.dtype)
    return lib


def _train(lib, model, loss_function, xs, compiled):
    optimizer = lib.optim.Adam(model.parameters(), lr=1e-2)

    def loss_of(m, data):
        recon_batch, mu, logvar = m(data)
        return loss_function(recon_batch, data, mu, logvar)
    train_step = training_step(lib, model, optimizer, loss_of, compiled, clip=None)
    model.train()
    losses = []
    for i, x in enumerate(xs):
        if lib is tj:
            tj.manual_seed(100 + i)
        losses.append(train_step(lib.tensor(x)).item())
    return losses, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled_step"])
def test_vae_trains_as_torch(compiled):
    rng = np.random.default_rng(0)
    xs = [rng.uniform(0, 1, (BATCH, 1, 4, 4))] * 3      # pixel intensities; one batch, 3 steps
    noise = [None]
    tlib = _torch_with_noise(noise)
    torch.manual_seed(0)
    tmodel, tloss = make_vae(tlib)
    tmodel = tmodel.double()
    model, loss_function = make_vae(tj)
    model = model.double()
    model.load_state_dict({k: v.detach().numpy() for k, v in tmodel.state_dict().items()})
    want_losses = []
    optimizer = torch.optim.Adam(tmodel.parameters(), lr=1e-2)
    for i, x in enumerate(xs):               # torch's loop, fed tracejit's noise step by step
        noise[0] = _noise(i)
        optimizer.zero_grad()
        data = torch.tensor(x)
        recon, mu, logvar = tmodel(data)
        loss = tloss(recon, data, mu, logvar)
        loss.backward()
        optimizer.step()
        want_losses.append(loss.item())
    want_state = {k: v.detach().numpy() for k, v in tmodel.state_dict().items()}
    losses, state = _train(tj, model, loss_function, xs, compiled)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-10)
    assert want_losses[-1] < want_losses[0]
    for k, want in want_state.items():
        np.testing.assert_allclose(state[k], want, rtol=1e-9, atol=1e-12, err_msg=k)
