"""nn.utils.weight_norm / remove_weight_norm (torch's original API) against torch: the
weight_g/weight_v parameters and state_dict keys, the forward and the gradients of g, v and the
bias with dim=0, dim=1 and dim=None, three SGD steps of a small weight-normed conv stack eagerly
and with tj.compile(model), folding back with remove_weight_norm, and the errors."""
import warnings

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")


def _wn(lib, module, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return lib.nn.utils.weight_norm(module, **kw)


def _stack(lib):
    nn = lib.nn
    return nn.Sequential(_wn(lib, nn.Conv1d(2, 4, 3, padding=1)), nn.LeakyReLU(0.1),
                         _wn(lib, nn.ConvTranspose1d(4, 3, 4, stride=2, padding=1), dim=1),
                         nn.LeakyReLU(0.1), nn.Flatten(), _wn(lib, nn.Linear(54, 2), dim=None))


def _pair():
    torch.manual_seed(0)
    tmodel, model = _stack(torch).double(), _stack(tj).double()
    state = {k: v.detach().numpy() for k, v in tmodel.state_dict().items()}
    assert list(model.state_dict()) == list(state)
    for k, v in model.state_dict().items():
        if k.endswith("_g"):                # g starts as torch's norm of the same v
            assert v.shape == state[k].shape, k
    model.load_state_dict(state)
    return tmodel, model


def _train(lib, model, forward, xs):
    opt = lib.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for x in xs:
        opt.zero_grad()
        loss = (forward((torch.tensor if lib is torch else tj.tensor)(x)) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    grads = {k: p.grad.numpy().copy() for k, p in model.named_parameters()}
    return losses, grads, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("compiled", [False, True])
def test_weight_norm_trains_as_torch(compiled):
    tmodel, model = _pair()
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, 2, 9)) for _ in range(3)]
    want = _train(torch, tmodel, tmodel, xs)
    got = _train(tj, model, tj.compile(model) if compiled else model, xs)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10)
    for g, w in zip(got[1:], want[1:]):
        assert list(g) == list(w)
        for k in w:
            np.testing.assert_allclose(g[k], w[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_remove_weight_norm_folds_back_as_torch():
    tmodel, model = _pair()
    for lib, m in ((torch, tmodel), (tj, model)):
        for i in (0, 2, 5):
            lib.nn.utils.remove_weight_norm(m[i])
    assert list(model.state_dict()) == list(tmodel.state_dict())
    for k, v in tmodel.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[k].numpy(), v.numpy(), rtol=1e-12)
    assert isinstance(model[0].weight, tj.nn.Parameter) and not model[0]._forward_pre_hooks
    x = np.random.default_rng(1).standard_normal((2, 2, 9))
    np.testing.assert_allclose(model(tj.tensor(x)).detach().numpy(),
                               tmodel(torch.tensor(x)).detach().numpy(), rtol=1e-10)


def test_weight_norm_errors():
    m = _wn(tj, tj.nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="two weight_norm hooks"):
        _wn(tj, m)
    with pytest.raises(ValueError, match="weight_norm of 'bias' not found"):
        tj.nn.utils.remove_weight_norm(m, "bias")
    with pytest.raises(ValueError, match="no parameter 'scale'"):
        _wn(tj, tj.nn.Linear(2, 2), name="scale")
    with pytest.warns(FutureWarning):
        tj.nn.utils.weight_norm(tj.nn.Linear(2, 2))
