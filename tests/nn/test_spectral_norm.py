"""nn.utils.spectral_norm / remove_spectral_norm (torch's original API) against torch on a
small DCGAN-style discriminator: state_dict keys, three training steps (the power iteration's
u and v buffers updated in place, gradients through sigma) eagerly and with tj.compile(model),
eval mode (no power iteration), folding back, and the errors."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")


def _disc(lib):
    nn, sn = lib.nn, lib.nn.utils.spectral_norm
    return nn.Sequential(sn(nn.Conv2d(3, 4, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
                         sn(nn.Conv2d(4, 8, 4, stride=2, padding=1), n_power_iterations=2),
                         nn.LeakyReLU(0.2), nn.Flatten(),
                         sn(nn.Linear(8 * 2 * 2, 1)))


def _pair():
    torch.manual_seed(0)
    tmodel, model = _disc(torch).double(), _disc(tj).double()
    state = {k: v.detach().numpy().copy() for k, v in tmodel.state_dict().items()}
    assert list(model.state_dict()) == list(state)
    model.load_state_dict(state)
    return tmodel, model


def _state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _train(lib, model, forward, xs):
    opt = lib.optim.Adam(model.parameters(), lr=1e-2, betas=(0.5, 0.999))
    losses = []
    model.train()
    for x in xs:
        opt.zero_grad()
        loss = lib.nn.functional.softplus(-forward((torch.tensor if lib is torch
                                                    else tj.tensor)(x))).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with lib.no_grad():
        evaluated = forward((torch.tensor if lib is torch else tj.tensor)(xs[0])).numpy()
    return losses, _state(model), evaluated


@pytest.mark.parametrize("compiled", [False, True])
def test_spectral_norm_discriminator_trains_as_torch(compiled):
    tmodel, model = _pair()
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, 3, 8, 8)) for _ in range(3)]
    want = _train(torch, tmodel, tmodel, xs)
    got = _train(tj, model, tj.compile(model) if compiled else model, xs)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10)
    assert list(got[1]) == list(want[1])
    for k, w in want[1].items():
        np.testing.assert_allclose(got[1][k], w, rtol=1e-8, atol=1e-11, err_msg=k)
    assert not np.allclose(want[1]["0.weight_u"], _state(_pair()[0])["0.weight_u"])
    np.testing.assert_allclose(got[2], want[2], rtol=1e-9, atol=1e-12)


def test_remove_spectral_norm_folds_back_as_torch():
    tmodel, model = _pair()
    for lib, m in ((torch, tmodel), (tj, model)):
        for i in (0, 2, 5):
            lib.nn.utils.remove_spectral_norm(m[i])
    assert list(model.state_dict()) == list(tmodel.state_dict())
    for k, v in tmodel.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[k].numpy(), v.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="spectral_norm of 'weight' not found"):
        tj.nn.utils.remove_spectral_norm(model[0])


def test_spectral_norm_errors():
    m = tj.nn.utils.spectral_norm(tj.nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="two spectral_norm hooks"):
        tj.nn.utils.spectral_norm(m)
    with pytest.raises(ValueError, match="n_power_iterations to be positive"):
        tj.nn.utils.spectral_norm(tj.nn.Linear(2, 2), n_power_iterations=0)
    assert tj.nn.utils.spectral_norm(tj.nn.ConvTranspose2d(2, 3, 3)).weight_u.shape == (3,)
