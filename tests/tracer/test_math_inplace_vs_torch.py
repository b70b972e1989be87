"""The in-place forms of math_ops (round_, lerp_, addcmul_, addcdiv_, ...) against torch:
values, gradients through a non-leaf, writes through views, under tj.compile, and errors."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

X = np.array([[0.3, -1.5, 2.5], [0.7, 0.25, -0.0]])
A = np.array([0.5, -2.0, 1.25])
B = np.array([[1.5], [-0.75]])

CASES = {
    "round_": lambda x, a, b: x.round_(),
    "round_decimals": lambda x, a, b: x.round_(decimals=1),
    "floor_": lambda x, a, b: x.floor_(),
    "ceil_": lambda x, a, b: x.ceil_(),
    "trunc_": lambda x, a, b: x.trunc_(),
    "fix_": lambda x, a, b: x.fix_(),
    "frac_": lambda x, a, b: x.frac_(),
    "log1p_": lambda x, a, b: x.abs_().log1p_(),
    "expm1_": lambda x, a, b: x.expm1_(),
    "hypot_": lambda x, a, b: x.hypot_(a),
    "lerp_": lambda x, a, b: x.lerp_(a, 0.7),
    "lerp_tensor": lambda x, a, b: x.lerp_(a, b),
    "addcmul_": lambda x, a, b: x.addcmul_(a, b, value=-0.5),
    "addcdiv_": lambda x, a, b: x.addcdiv_(a, b, value=2),
    "nan_to_num_": lambda x, a, b: x.div_(0.0).nan_to_num_(posinf=3.0),
    "logit_": lambda x, a, b: x.mul_(0.1).add_(0.5).logit_(),
    "xlogy_": lambda x, a, b: x.xlogy_(a.abs()),
    "sinc_": lambda x, a, b: x.sinc_(),
    "deg2rad_": lambda x, a, b: x.deg2rad_(),
    "rad2deg_": lambda x, a, b: x.rad2deg_(),
    "clamp_min_": lambda x, a, b: x.clamp_min_(0.4),
    "clamp_max_": lambda x, a, b: x.clamp_max_(a),
    "float_power_": lambda x, a, b: x.abs_().float_power_(2.5),
    "true_divide_": lambda x, a, b: x.true_divide_(b),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_inplace_values_and_gradients(name):
    f = CASES[name]
    w = np.random.default_rng(0).standard_normal(X.shape)
    ts = [torch.tensor(v, requires_grad=True) for v in (X, A, B)]
    y = ts[0] * 1.0
    r = f(y, ts[1], ts[2])
    assert r is y
    (y * torch.tensor(w)).sum().backward()
    js = [tj.tensor(v, requires_grad=True) for v in (X, A, B)]
    z = js[0] * 1.0
    r2 = f(z, js[1], js[2])
    assert r2 is z
    (z * tj.tensor(w)).sum().backward()
    np.testing.assert_allclose(z.detach().numpy(), y.detach().numpy(), rtol=1e-14, atol=1e-15)
    for j, t in zip(js, ts):
        if t.grad is None:
            assert j.grad is None or not np.any(j.grad.numpy()), name
        else:
            np.testing.assert_allclose(j.grad.numpy(), t.grad.numpy(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", ["round_", "addcmul_", "lerp_", "log1p_", "addcdiv_"])
def test_inplace_compiled_and_through_views(name):
    f = CASES[name]

    def step(x, a, b):
        v = x[:, 1:]              # a view: the write goes through to x
        f(v, a[1:], b)
        return x

    want = step(torch.tensor(X), torch.tensor(A), torch.tensor(B)).numpy()
    np.testing.assert_allclose(step(tj.tensor(X), tj.tensor(A), tj.tensor(B)).numpy(), want,
                               rtol=1e-14)
    got = tj.compile(step)(tj.tensor(X), tj.tensor(A), tj.tensor(B))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-14)


def test_inplace_errors_as_torch():
    for m, tensor in ((torch, torch.tensor), (tj, tj.tensor)):
        x = tensor(np.array([1.0, 2.0], np.float32))
        with pytest.raises(RuntimeError):
            x.float_power_(2)                     # the result is float64
        with pytest.raises(RuntimeError):
            x.addcmul_(tensor(np.ones((2, 2), np.float32)), x)   # would broadcast x
        with pytest.raises(RuntimeError):
            tensor(np.array([1, 2])).log1p_()                   # float result, int tensor
        leaf = tensor(np.array([1.0, 2.0]), requires_grad=True)
        with pytest.raises(RuntimeError):
            leaf.round_()
