"""Normalizations and variances of constant rows come out exactly 0 (layer_norm, group_norm,
instance_norm, batch_norm, var, std), as torch's Welford-based kernels give: the mean was
sum(x) / n, an ulp off for a float32 row of 1000.1s, and layer_norm divides that error by
sqrt(eps): 0.019 where torch gives 0 (compiled fuzzer seed 72016, an expanded input). The
mean is now taken of the row shifted by its first element. Eager and compiled, values and
gradients against torch run in float64 on the same float32 values: torch's own float32
batch_norm keeps such an error (-0.0073 for a channel of 1000.1s), and its float32 layer_norm
gradient of a constant row cancels in x * sum(dy * x) (4e-4 relative)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tracejit as tj  # noqa: E402
import tracejit.nn.functional as F  # noqa: E402

TF = torch.nn.functional


def _input(shape, rows_axis_last: bool = True):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32) * 3
    flat = x.reshape(-1, shape[-1]) if rows_axis_last else x
    for k, v in enumerate((1000.1, 1.2345, -7.77, 3.3e-3)):
        flat[k] = v                     # constant rows (and spread rows after them)
    return x


CASES = {
    "layer_norm": (lambda L, Fn, x: Fn.layer_norm(x, x.shape[-1:]), (5, 3)),
    "layer_norm_2d": (lambda L, Fn, x: Fn.layer_norm(x, x.shape[-2:]), (4, 1, 7)),
    "group_norm": (lambda L, Fn, x: Fn.group_norm(x, 2), (4, 6, 1)),
    "instance_norm": (lambda L, Fn, x: Fn.instance_norm(x), (4, 2, 3)),
    "var": (lambda L, Fn, x: x.var(-1), (5, 3)),
    "std": (lambda L, Fn, x: x.std(-1, correction=0), (5, 3)),
    "var_mean": (lambda L, Fn, x: L.var_mean(x, -1)[0], (5, 9)),
}


def _batch_norm(L, Fn, x):
    rm, rv = L.zeros(x.shape[1], dtype=x.dtype), L.ones(x.shape[1], dtype=x.dtype)
    y = Fn.batch_norm(x, rm, rv, training=True)
    return y, rm, rv


@pytest.mark.parametrize("name", list(CASES))
def test_constant_rows_normalize_to_zero_as_torch(name):
    fn, shape = CASES[name]
    x = _input(shape)
    want_t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    want = fn(torch, TF, want_t)
    g = np.random.default_rng(1).standard_normal(tuple(want.shape)).astype(np.float32)
    want.backward(torch.tensor(g, dtype=torch.float64))
    compiled = tj.compile(lambda a: fn(tj, F, a))
    for run in (lambda a: fn(tj, F, a), compiled):
        a = tj.tensor(x, requires_grad=True)
        y = run(a)
        y.backward(tj.tensor(g))
        np.testing.assert_allclose(y.detach().numpy(), want.detach().numpy(), atol=2e-6,
                                   rtol=1e-5)
        np.testing.assert_allclose(a.grad.numpy(), want_t.grad.numpy(), atol=2e-4, rtol=1e-4)
    # the constant rows exactly: layer_norm's 0.019 was in the 1000.1 row
    y = compiled(tj.tensor(x)).numpy()
    if name.startswith("layer_norm") or name in ("var", "std", "var_mean"):
        rows = y.reshape(-1, *y.shape[-1:]) if y.ndim > 1 else y.reshape(-1, 1)
        assert not np.any(rows[:4]) if name.startswith("layer") else not np.any(y[:4])


def test_expanded_and_one_element_rows():
    """Seed 72016's input: a broadcast (stride-0) last axis; rows of one element; float64."""
    x = (np.random.default_rng(3).standard_normal((3, 4, 1)) * 500).astype(np.float32)
    f = tj.compile(lambda a: F.layer_norm(a, (3,)))
    for a in (tj.tensor(x).expand(3, 4, 3), tj.tensor(x.astype(np.float64)).expand(3, 4, 3)):
        assert not np.any(f(a).numpy()) and not np.any(F.layer_norm(a, (3,)).numpy())
    for lib, Fn in ((tj, F), (torch, TF)):
        a = lib.tensor(x, requires_grad=True)
        y = Fn.layer_norm(a, (1,))
        (y * 3).sum().backward()
        assert not np.any(y.detach().numpy()) and not np.any(a.grad.numpy())


def test_batch_norm_constant_channel_and_running_stats():
    x = np.random.default_rng(5).standard_normal((4, 3, 2)).astype(np.float32)
    x[:, 1] = 1000.1                   # a constant channel
    x[:, 2] *= 1e-3
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    want, trm, trv = _batch_norm(torch, TF, tx)
    want.sum().backward()
    for run in (lambda a: _batch_norm(tj, F, a), None):
        a = tj.tensor(x, requires_grad=True)
        if run is None:
            rm, rv = tj.zeros(3), tj.ones(3)
            y = tj.compile(lambda a: F.batch_norm(a, rm, rv, training=True))(a)
        else:
            y, rm, rv = run(a)
        y.sum().backward()
        assert not np.any(y.detach().numpy()[:, 1])
        np.testing.assert_allclose(y.detach().numpy(), want.detach().numpy(), atol=2e-5)
        np.testing.assert_allclose(a.grad.numpy(), tx.grad.numpy(), atol=2e-4)
        np.testing.assert_allclose(rm.numpy(), trm.numpy(), rtol=1e-6)
        np.testing.assert_allclose(rv.numpy(), trv.numpy(), rtol=1e-5, atol=1e-7)
