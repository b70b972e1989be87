"""Inside a compiled function, `d = y.detach()` (or a view of d) written in place with a value
that depends on an argument requiring grad takes that value's history, as eagerly and in torch:
the output requires grad and the argument gets its gradient (compiled fuzzer seed 3221: the
output was returned without history and the gradient was silently dropped)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tracejit as tj


def _body(a, w, b):
    y = a * 2.0
    d = y.detach()
    d.copy_(w * 3.0)            # d takes w's history
    e = (a * 5.0).detach()
    e.add_(b)                   # b needs no gradient: e stays without history
    g = (a * 1.5).detach()
    g[1:].mul_(w[1:])           # a view of a detached tensor: g takes a put of w's history
    h = (a * 0.5).detach()
    h.add_(w)
    return y, d, e, g, h


def _run(lib, fn, seed):
    r = np.random.default_rng(seed)
    a = lib.tensor(r.standard_normal(4), requires_grad=True)
    w = lib.tensor(r.standard_normal(4), requires_grad=True)
    b = lib.tensor(r.standard_normal(4))
    outs = fn(a, w, b)
    flags = [o.requires_grad for o in outs]
    ws = [r.standard_normal(4) for _ in outs]
    terms = [(o * lib.tensor(k)).sum() for o, k in zip(outs, ws) if o.requires_grad]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    total.backward()
    vals = [np.asarray(o.detach().numpy()) for o in outs]
    return flags, vals, np.asarray(a.grad.numpy()), np.asarray(w.grad.numpy())


@pytest.mark.parametrize("seed", range(3))
def test_detached_tensor_written_in_place_inside_compile_as_torch(seed):
    want = _run(torch, _body, seed)
    for fn in (_body, tj.compile(_body)):
        flags, vals, ga, gw = _run(tj, fn, seed)
        assert flags == want[0]
        for v, t in zip(vals, want[1]):
            np.testing.assert_allclose(v, t, rtol=1e-12)
        np.testing.assert_allclose(ga, want[2], rtol=1e-12)
        np.testing.assert_allclose(gw, want[3], rtol=1e-12)


def test_compiled_fuzzer_seed_3221():
    import compiled_fuzz_run as R
    assert R.run_compiled(3221) == "ok"
