"""tj.nn.utils.parametrizations.orthogonal and .spectral_norm (torch's new-style
parametrizations) against torch: torch's state_dict keys, and from torch's state (loaded, as
the orthogonal completion and the power iteration's start are random) the same weights,
outputs and gradients of the original, for each orthogonal map on square, tall and wide
weights and after moving the original off its start; use_trivialization=False; spectral norm
of Linear and Conv2d over two training calls (the power iteration's buffers follow torch's);
a compiled loss through the Cayley map; matrix_exp in compiled code and bad input raise."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
TPZ = torch.nn.utils.parametrizations
JPZ = tj.nn.utils.parametrizations


def _sync(t, j):
    j.load_state_dict({k: v.detach().numpy().copy() for k, v in t.state_dict().items()})


def _close(a, b, rtol=1e-9):
    np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=rtol, atol=1e-11)


def _linears(i, o):
    t, j = torch.nn.Linear(i, o, dtype=torch.float64), tj.nn.Linear(i, o, dtype=tj.float64)
    _sync(t, j)
    return t, j


def test_orthogonal_maps_match_torch():
    rng = np.random.default_rng(0)
    for (i, o), kind in (((3, 3), None), ((3, 3), "cayley"), ((3, 3), "householder"),
                         ((4, 2), None), ((2, 4), "cayley"), ((2, 4), "matrix_exp")):
        t, j = _linears(i, o)
        TPZ.orthogonal(t, orthogonal_map=kind)
        JPZ.orthogonal(j, orthogonal_map=kind)
        assert list(j.state_dict()) == list(t.state_dict())
        if i == o:               # a square weight's base is its own orthogonal factor
            _close(t.weight, j.weight)
        w = j.weight.detach().numpy()
        small = w if o <= i else w.T
        np.testing.assert_allclose(small @ small.T, np.eye(min(i, o)), atol=1e-12)
        with torch.no_grad():
            orig = t.parametrizations.weight.original
            orig.add_(torch.tensor(rng.standard_normal(tuple(orig.shape)) * 0.3))
        _sync(t, j)
        _close(t.weight, j.weight)
        x = rng.standard_normal((2, i))
        (t(torch.tensor(x)) ** 3).sum().backward()
        (j(tj.tensor(x)) ** 3).sum().backward()
        for (a, p), (b, q) in zip(t.named_parameters(), j.named_parameters()):
            assert a == b
            _close(p.grad, q.grad, 1e-8)
    t, j = _linears(3, 3)
    TPZ.orthogonal(t, use_trivialization=False)
    JPZ.orthogonal(j, use_trivialization=False)
    assert list(j.state_dict()) == ["bias", "parametrizations.weight.original"]
    _sync(t, j)
    _close(t.weight, j.weight)


def test_orthogonal_compiled_and_errors():
    rng = np.random.default_rng(1)
    t, j = _linears(3, 3)
    TPZ.orthogonal(t, orthogonal_map="cayley")
    JPZ.orthogonal(j, orthogonal_map="cayley")
    with torch.no_grad():
        t.parametrizations.weight.original.add_(0.2)
    _sync(t, j)
    loss = tj.compile(lambda x: (j(x) ** 3).sum())
    x = rng.standard_normal((2, 3))
    got = loss(tj.tensor(x))
    got.backward()
    want = (t(torch.tensor(x)) ** 3).sum()
    want.backward()
    _close(want, got)
    _close(t.parametrizations.weight.original.grad, j.parametrizations.weight.original.grad,
           1e-8)
    m = tj.nn.Linear(3, 3)
    JPZ.orthogonal(m)                                    # matrix_exp: eager only
    with pytest.raises(RuntimeError, match="matrix_exp.*cayley"):
        tj.compile(lambda x: m(x).sum())(tj.ones(1, 3))
    with pytest.raises(ValueError, match="orthogonal_map has to be one of"):
        JPZ.orthogonal(tj.nn.Linear(3, 3), orthogonal_map="qr")
    with pytest.raises(ValueError, match="matrix or batch of matrices"):
        JPZ.orthogonal(tj.nn.Linear(3, 3), "bias")


def test_spectral_norm_matches_torch():
    rng = np.random.default_rng(2)
    for make, shape, kw in ((lambda lib: lib.nn.Linear(4, 3, dtype=lib.float64), (2, 4), {}),
                            (lambda lib: lib.nn.Conv2d(2, 3, 2, dtype=lib.float64),
                             (1, 2, 4, 4), dict(n_power_iterations=2))):
        t, j = make(torch), make(tj)
        TPZ.spectral_norm(t, **kw)
        JPZ.spectral_norm(j, **kw)
        _sync(t, j)
        x = rng.standard_normal(shape)
        for _ in range(2):                               # training: the buffers move
            a, b = t(torch.tensor(x)), j(tj.tensor(x))
            _close(a, b)
        (a ** 2).sum().backward()
        (b ** 2).sum().backward()
        for (n1, p), (n2, q) in zip(t.named_parameters(), j.named_parameters()):
            assert n1 == n2
            _close(p.grad, q.grad, 1e-8)
        tsd, jsd = t.state_dict(), j.state_dict()
        assert list(tsd) == list(jsd)
        for k in tsd:
            _close(tsd[k], jsd[k])
        s = np.linalg.svd(j.weight.detach().numpy().reshape(j.weight.shape[0], -1),
                          compute_uv=False)
        assert abs(s[0] - 1) < 1e-3
    with pytest.raises(ValueError, match="no parameter or buffer"):
        JPZ.spectral_norm(tj.nn.Linear(2, 2), "nope")
