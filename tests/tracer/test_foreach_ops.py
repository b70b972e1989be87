"""torch's `_foreach_*` list ops (EMA updates in timm/diffusers, hand-written optimizers,
gradient clipping) against torch: in-place and out-of-place forms with one scalar, a 0-d
tensor, a list of scalars or a list of tensors; unary and ternary ops (lerp, addcmul, addcdiv);
norms; gradients through the out-of-place forms; an EMA update inside @tj.compile; errors."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

SHAPES = [(2, 3), (4,), ()]


def _lists(lib, n=3, positive=False):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        arrs = [rng.standard_normal(s) for s in SHAPES]
        if positive:
            arrs = [np.abs(a) + 0.5 for a in arrs]
        out.append([lib.tensor(a) for a in arrs])
    return out


CASES = {
    "add_scalar_alpha": lambda L, x, y, z: L._foreach_add(x, y, alpha=0.5),
    "add_scalar": lambda L, x, y, z: L._foreach_add(x, 2.0),
    "sub_scalars": lambda L, x, y, z: L._foreach_sub(x, [1.0, 2.0, 3.0]),
    "mul_0d": lambda L, x, y, z: L._foreach_mul(x, L.tensor(0.5, dtype=L.float64)),
    "div_list": lambda L, x, y, z: L._foreach_div(x, z),
    "pow_scalar": lambda L, x, y, z: L._foreach_pow(z, 1.5),
    "maximum": lambda L, x, y, z: L._foreach_maximum(x, y),
    "clamp_min": lambda L, x, y, z: L._foreach_clamp_min(x, 0.1),
    "sqrt": lambda L, x, y, z: L._foreach_sqrt(z),
    "sigmoid": lambda L, x, y, z: L._foreach_sigmoid(x),
    "neg": lambda L, x, y, z: L._foreach_neg(x),
    "reciprocal": lambda L, x, y, z: L._foreach_reciprocal(z),
    "lerp_scalar": lambda L, x, y, z: L._foreach_lerp(x, y, 0.3),
    "lerp_list": lambda L, x, y, z: L._foreach_lerp(x, y, z),
    "addcmul_value": lambda L, x, y, z: L._foreach_addcmul(x, y, z, value=-0.5),
    # (torch's own backward of this one fails on a 0-d tensor: its per-tensor loop instead)
    "addcdiv_scalars": lambda L, x, y, z: (
        L._foreach_addcdiv(x, y, z, [0.1, 0.2, 0.3]) if L is tj else
        tuple(torch.addcdiv(a, b, c, value=v) for a, b, c, v in zip(x, y, z, [0.1, 0.2, 0.3]))),
    "norm2": lambda L, x, y, z: L._foreach_norm(x),
    "norm1": lambda L, x, y, z: L._foreach_norm(x, 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_foreach_op_as_torch_with_gradients(name):
    fn = CASES[name]
    got_lists, want_lists = _lists(tj, positive=False), _lists(torch, positive=False)
    z_tj, z_t = _lists(tj, 1, positive=True)[0], _lists(torch, 1, positive=True)[0]
    for xs in (got_lists[0], want_lists[0], z_tj, z_t):
        for t in xs:
            t.requires_grad_(True)
    got = fn(tj, got_lists[0], got_lists[1], z_tj)
    want = fn(torch, want_lists[0], want_lists[1], z_t)
    assert isinstance(got, tuple) and len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.detach().numpy(), w.detach().numpy(), rtol=1e-12,
                                   atol=1e-14)
    sum(((g * g).sum() for g in got), tj.tensor(0.0, dtype=tj.float64)).backward()
    sum(((w * w).sum() for w in want), torch.tensor(0.0, dtype=torch.float64)).backward()
    for g, w in zip(got_lists[0] + z_tj, want_lists[0] + z_t):
        assert (g.grad is None) == (w.grad is None)
        if w.grad is not None:
            np.testing.assert_allclose(g.grad.numpy(), w.grad.numpy(), rtol=1e-12, atol=1e-14)


INPLACE = {
    "add_": lambda L, x, y, z: L._foreach_add_(x, y, alpha=-2.0),
    "mul_": lambda L, x, y, z: L._foreach_mul_(x, 0.9),
    "sub_0d": lambda L, x, y, z: L._foreach_sub_(x, L.tensor(1.5, dtype=L.float64)),
    "div_": lambda L, x, y, z: L._foreach_div_(x, z),
    "maximum_": lambda L, x, y, z: L._foreach_maximum_(x, y),
    "lerp_": lambda L, x, y, z: L._foreach_lerp_(x, y, 0.25),
    "addcmul_": lambda L, x, y, z: L._foreach_addcmul_(x, y, z, value=2.0),
    "addcdiv_": lambda L, x, y, z: L._foreach_addcdiv_(x, y, z),
    "sqrt_": lambda L, x, y, z: L._foreach_sqrt_(z),
    "exp_": lambda L, x, y, z: L._foreach_exp_(x),
    "zero_": lambda L, x, y, z: L._foreach_zero_(x),
    "copy_": lambda L, x, y, z: L._foreach_copy_(x, y),
}


@pytest.mark.parametrize("name", list(INPLACE))
def test_foreach_inplace_as_torch(name):
    fn = INPLACE[name]
    (x, y), (tx, ty) = _lists(tj, 2), _lists(torch, 2)
    z, tz = _lists(tj, 1, positive=True)[0], _lists(torch, 1, positive=True)[0]
    got, want = fn(tj, x, y, z), fn(torch, tx, ty, tz)
    target, ttarget = (z, tz) if name == "sqrt_" else (x, tx)
    assert isinstance(got, list) and all(a is b for a, b in zip(got, target))
    for g, w in zip(target, ttarget):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-12, atol=1e-14)


def test_foreach_ema_update_inside_compile_as_torch():
    """timm's ModelEmaV3: ema <- lerp(ema, model, 1 - decay) under no_grad, each call."""
    (ema, params), (tema, tparams) = _lists(tj, 2), _lists(torch, 2)

    def update(lib, ema, params, decay):
        with lib.no_grad():
            lib._foreach_lerp_(ema, params, 1.0 - decay)
            lib._foreach_mul_(params, 1.01)
    step = tj.compile(lambda decay: update(tj, ema, params, decay))
    for decay in (0.9, 0.8, 0.9):
        step(decay)
        update(torch, tema, tparams, decay)
    for g, w in zip(ema + params, tema + tparams):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-12, atol=1e-14)


def test_foreach_errors_are_clear():
    x, y = _lists(tj, 2)
    with pytest.raises(RuntimeError, match=r"_foreach_add_: the tensor list has 3 tensors but "
                                           r"the list of scalars has 2"):
        tj._foreach_add_(x, [1.0, 2.0])
    with pytest.raises(RuntimeError, match="list of tensors has 1"):
        tj._foreach_mul(x, y[:1])
    with pytest.raises(TypeError, match="_foreach_sqrt: expects a list or tuple of tensors"):
        tj._foreach_sqrt(x[0])
    with pytest.raises(TypeError, match="_foreach_lerp_: expects 2 operand"):
        tj._foreach_lerp_(x, y)
