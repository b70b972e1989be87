"""nn.utils.parametrize and nn.utils.parametrizations.weight_norm against torch: torch's
state_dict keys and class name, so a torch checkpoint loads as it is; a weight-normed conv stack
trains as torch's eagerly and under tj.compile(model); a user parametrization (a symmetric
matrix, as torch's tutorial) chained with a second one; assigning the tensor goes through
right_inverse; cached(); remove_parametrizations; errors."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")


def _stack(lib):
    nn, wn = lib.nn, lib.nn.utils.parametrizations.weight_norm
    return nn.Sequential(wn(nn.Conv1d(2, 4, 3, padding=1)), nn.LeakyReLU(0.1),
                         wn(nn.ConvTranspose1d(4, 3, 4, stride=2, padding=1), dim=1),
                         nn.Flatten(), wn(nn.Linear(54, 2), dim=None))


def _state(m):
    return {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("compiled", [False, True])
def test_parametrized_weight_norm_trains_as_torch(compiled):
    torch.manual_seed(0)
    tmodel, model = _stack(torch).double(), _stack(tj).double()
    assert list(_state(model)) == list(_state(tmodel))
    assert type(model[0]).__name__ == type(tmodel[0]).__name__ == "ParametrizedConv1d"
    model.load_state_dict(_state(tmodel))
    xs = [np.random.default_rng(i).standard_normal((2, 2, 9)) for i in range(3)]
    runs = []
    for lib, m in ((torch, tmodel), (tj, model)):
        forward = tj.compile(m) if compiled and lib is tj else m
        opt = lib.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
        losses = []
        for x in xs:
            opt.zero_grad()
            loss = (forward((torch.tensor if lib is torch else tj.tensor)(x)) ** 2).mean()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        runs.append((losses, _state(m), m[0].weight.detach().numpy()))
    (got, want) = runs[1], runs[0]
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10)
    for k, w in want[1].items():
        np.testing.assert_allclose(got[1][k], w, rtol=1e-9, atol=1e-12, err_msg=k)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-9, atol=1e-12)


def _symmetric(lib):
    class Symmetric(lib.nn.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).transpose(-1, -2)

        def right_inverse(self, X):
            return X.triu()

    class Scale(lib.nn.Module):
        def forward(self, X):
            return X * 2.0

        def right_inverse(self, X):
            return X / 2.0
    return Symmetric(), Scale()


class Plain(tj.nn.Module):
    def forward(self, X):
        return X


def test_user_parametrizations_chain_assign_cache_and_remove_as_torch():
    P = tj.nn.utils.parametrize
    results = []
    for lib in (torch, tj):
        torch.manual_seed(0)
        m = lib.nn.Linear(3, 3).double()
        if lib is tj:
            m.load_state_dict(tmodel_state)
        else:
            tmodel_state = _state(m)
        sym, scale = _symmetric(lib)
        lib.nn.utils.parametrize.register_parametrization(m, "weight", sym)
        lib.nn.utils.parametrize.register_parametrization(m, "weight", scale)
        w = m.weight.detach().numpy().copy()
        keys = list(m.state_dict())
        x = (torch.tensor if lib is torch else tj.tensor)(np.arange(6.0).reshape(2, 3))
        m(x).sum().backward()
        grad = m.parametrizations.weight.original.grad.numpy().copy()
        with lib.no_grad():
            m.weight = (torch.tensor if lib is torch else tj.tensor)(np.eye(3) * 4.0)
        assigned = m.weight.detach().numpy().copy()
        if lib is tj:
            with pytest.raises(RuntimeError, match="Plain does not implement right_inverse"):
                m.parametrizations.weight.append(Plain())
                m.weight = tj.ones(3, 3, dtype=tj.float64)
            del m.parametrizations.weight[2]
        with lib.nn.utils.parametrize.cached():
            assert m.weight is m.weight
        lib.nn.utils.parametrize.remove_parametrizations(m, "weight")
        results.append((w, keys, grad, assigned, list(m.state_dict()), type(m).__name__,
                        m.weight.detach().numpy()))
    want, got = results
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[0], got[0].T)
    assert got[1] == want[1] == ["bias", "parametrizations.weight.original"]
    np.testing.assert_allclose(got[2], want[2], rtol=1e-12)
    np.testing.assert_allclose(got[3], want[3], rtol=1e-12)
    assert got[4] == want[4] and got[5] == want[5] == "Linear"
    np.testing.assert_allclose(got[6], want[6], rtol=1e-12)
    assert not P.is_parametrized(tj.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="does not have a parametrization on weight"):
        P.remove_parametrizations(tj.nn.Linear(2, 2), "weight")
    with pytest.raises(ValueError, match="no parameter or buffer with name 'scale'"):
        P.register_parametrization(tj.nn.Linear(2, 2), "scale", _symmetric(tj)[0])
