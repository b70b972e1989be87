"""check(): a tracejit function against its PyTorch twin on the same inputs: values, dtypes and
(for float inputs) gradients for a random cotangent, eagerly and through tj.compile (the
compiled backward runs inside eager autograd), optionally on non-contiguous inputs."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}


def _np(t) -> np.ndarray:
    return t.detach().numpy() if isinstance(t, (tj.Tensor, torch.Tensor)) else np.asarray(t)


def _outs(r) -> list:
    return list(r) if isinstance(r, (tuple, list)) else [r]


def _leaf(a: np.ndarray, strided: bool):
    """A tracejit leaf over `a`; strided: over a non-contiguous view holding a's values."""
    if strided and a.ndim:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        a = big[..., ::2]
        assert not a.flags.c_contiguous or a.size <= 1
    return tj.Tensor(a, requires_grad=a.dtype.kind == "f")


def check(tj_fn, torch_fn, *arrays, compiled: bool = True, strided: bool = False,
          grad: bool = True) -> None:
    """tj_fn and torch_fn agree on `arrays`: values, dtypes and (for float inputs) gradients
    for a random cotangent, eagerly and, if `compiled`, through tj.compile."""
    t_in = [torch.tensor(a, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
    want = _outs(torch_fn(*t_in))
    rng = np.random.default_rng(1)
    cots = [rng.standard_normal(w.shape).astype(_np(w).dtype) if w.is_floating_point() else None
            for w in want]
    diff = [(w, c) for w, c in zip(want, cots) if w.requires_grad]
    t_leaves = [t for t in t_in if t.requires_grad]
    want_g = (torch.autograd.grad([w for w, _ in diff], t_leaves,
                                  [torch.tensor(c) for _, c in diff], allow_unused=True)
              if diff and t_leaves else None)
    for mode in ("eager", "compiled") if compiled else ("eager",):
        ins = [_leaf(a, strided) for a in arrays]
        fn = tj_fn if mode == "eager" else tj.compile(tj_fn)
        got = _outs(fn(*ins))
        assert len(got) == len(want), mode
        for g, w in zip(got, want):
            gn, wn = _np(g), _np(w)
            assert gn.shape == wn.shape, (mode, gn.shape, wn.shape)
            assert gn.dtype == wn.dtype, (mode, gn.dtype, wn.dtype)
            if wn.dtype.kind == "f":
                np.testing.assert_allclose(gn, wn, equal_nan=True, **TOL[wn.dtype.type],
                                           err_msg=mode)
            else:
                np.testing.assert_array_equal(gn, wn, err_msg=mode)
        if want_g is None:
            continue
        outs = [g for g, c in zip(got, cots) if c is not None and g.requires_grad]
        assert len(outs) == len(diff), f"{mode}: which results need grad differs from torch"
        leaves = [x for x in ins if x.requires_grad]
        got_g = tj.autograd.grad(outs, leaves, [tj.tensor(c) for _, c in diff],
                                 allow_unused=True)
        for i, (g, w) in enumerate(zip(got_g, want_g)):
            wn = np.zeros(leaves[i].shape, arrays[0].dtype) if w is None else _np(w)
            gn = np.zeros_like(wn) if g is None else _np(g)
            np.testing.assert_allclose(gn, wn, equal_nan=True, **TOL[wn.dtype.type],
                                       err_msg=f"{mode} gradient {i}")


def rand(*shape, dtype=np.float64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)
