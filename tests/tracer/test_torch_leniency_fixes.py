"""Four differences from torch the fuzzers had listed as not fixed, now as torch, eager and
compiled: softmax/log_softmax of a row holding +inf is all NaN (was [0, nan] and [-inf, nan]);
binary_cross_entropy_with_logits has the target's dtype (torch computes in place into
`1 - target`); index_add into a bool tensor is a logical or (was refused); argmax/argmin of
bools raise (were computed)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tracejit as tj  # noqa: E402
import tracejit.nn.functional as F  # noqa: E402

INF, NAN = float("inf"), float("nan")


def _both(lib, t):
    return tuple(getattr(lib, n)(t, d) for n in ("softmax", "log_softmax") for d in (-1, 0))


def test_softmax_and_log_softmax_of_infinite_rows():
    rows = np.array([[1.0, INF, 2.0], [INF, INF, 0.0], [-INF, -INF, -INF], [1.0, -INF, 3.0],
                     [NAN, 1.0, 2.0], [0.5, -1.0, 4.0]])
    compiled = tj.compile(lambda t: _both(tj, t))
    for dtype in ("float32", "float64"):
        x = rows.astype(dtype)
        want = _both(torch, torch.tensor(x))
        runs = [_both(tj, tj.tensor(x)), _both(tj, tj.tensor(x.T.copy()).t())]   # (strided)
        if dtype == "float32":
            runs.append(compiled(tj.tensor(x)))
        for got in runs:
            for g, w in zip(got, want):
                np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-6, atol=1e-7)
    # gradients of finite rows are unchanged
    x = np.random.default_rng(0).standard_normal((3, 4))
    tx = torch.tensor(x, requires_grad=True)
    sum((o * (k + 1)).sum() for k, o in enumerate(_both(torch, tx))).backward()
    for run in (lambda t: _both(tj, t), compiled):
        a = tj.tensor(x, requires_grad=True)
        sum((o * (k + 1)).sum() for k, o in enumerate(run(a))).backward()
        np.testing.assert_allclose(a.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("xd,yd,wd", [("float64", "float32", None), ("float32", "float64", None),
                                      ("float32", "float32", "float64")])
def test_bce_with_logits_has_the_targets_dtype(xd, yd, wd):
    x = np.array([[0.3, -2.0, 5.0], [1.5, 0.0, -0.25]], xd)
    y = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.25]], yd)
    w = None if wd is None else np.array([2.0, 1.0, 0.5], wd)
    tx = torch.tensor(x, requires_grad=True)
    want = [torch.nn.functional.binary_cross_entropy_with_logits(
        tx, torch.tensor(y), None if w is None else torch.tensor(w), reduction=red)
        for red in ("mean", "none")]
    sum(o.sum() for o in want).backward()
    fn = lambda a, b: [F.binary_cross_entropy_with_logits(                  # noqa: E731
        a, b, None if w is None else tj.tensor(w), reduction=red) for red in ("mean", "none")]
    for run in (fn, tj.compile(fn)):
        a = tj.tensor(x, requires_grad=True)
        got = run(a, tj.tensor(y))
        sum(o.sum() for o in got).backward()
        assert a.grad.dtype == a.dtype
        np.testing.assert_allclose(a.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-7)
        for g, o in zip(got, want):
            assert g.detach().numpy().dtype == o.detach().numpy().dtype
            np.testing.assert_allclose(g.detach().numpy(), o.detach().numpy(), rtol=2e-6)


def test_index_add_into_bool_is_a_logical_or():
    base = np.array([[False, True, False], [False, False, False], [True, False, False],
                     [False, False, False]])
    src = np.array([[True, False, False], [False, False, True], [False, False, False]])
    idx = np.array([0, 3, 0])
    for alpha in (1, 2, 0, -1):
        want = torch.tensor(base).index_add(0, torch.tensor(idx), torch.tensor(src), alpha=alpha)
        fn = lambda x, i, s: x.index_add(0, i, s, alpha=alpha)         # noqa: E731
        for got in (fn(tj.tensor(base), tj.tensor(idx), tj.tensor(src)),
                    tj.compile(fn)(tj.tensor(base), tj.tensor(idx), tj.tensor(src))):
            assert got.dtype == tj.bool
            np.testing.assert_array_equal(got.numpy(), want.numpy())
        x = tj.tensor(base.copy())
        x.index_add_(0, tj.tensor(idx), tj.tensor(src), alpha=alpha)
        np.testing.assert_array_equal(x.numpy(), want.numpy())
    empty = tj.tensor(base).index_add(0, tj.tensor(np.zeros(0, np.int64)),
                                      tj.tensor(np.zeros((0, 3), bool)))
    np.testing.assert_array_equal(empty.numpy(), base)
    with pytest.raises(RuntimeError, match="same scalar type"):
        tj.tensor(base).index_add(0, tj.tensor(idx), tj.tensor(src.astype(np.float32)))


def test_argmax_argmin_of_bools_raise_as_torch():
    b = np.array([[True, False], [False, True]])
    for name in ("argmax", "argmin"):
        with pytest.raises(RuntimeError, match="bool"):
            getattr(torch, name)(torch.tensor(b))
        for call in (lambda t: getattr(t, name)(), lambda t: getattr(tj, name)(t, 1),
                     tj.compile(lambda t: getattr(t, name)(dim=0))):
            with pytest.raises(RuntimeError, match=f"{name}.*bool.*test_torch_leniency"):
                call(tj.tensor(b))
    # max/min of bools stay allowed, as torch
    v, i = tj.tensor(b).max(1)
    tv, ti = torch.tensor(b).max(1)
    np.testing.assert_array_equal(v.numpy(), tv.numpy())
    np.testing.assert_array_equal(i.numpy(), ti.numpy())
