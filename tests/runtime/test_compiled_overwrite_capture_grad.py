"""A captured tensor that a compiled call gives autograd history (`c.copy_(a)` of an argument
that requires grad) and then overwrites (`zero_`, `fill_`, `copy_` of a value without history)
still requires grad, as torch's ZeroBackward0/FillBackward2/CopyBackwards: the outputs read
from it require grad and backward through them gives zero gradients (compiled fuzzer seed
90302: `requires_grad=False`, and backward raised). Which outputs require grad follows the
program as traced, not the optimized graph, whose passes fold the overwritten value into a
constant."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tracejit as tj  # noqa: E402


def _body(lib, mode, c, a):
    if mode == "zero":
        c.copy_(a)
        c.zero_()
        return c * 2, c.t()
    if mode == "fill":
        c.copy_(a * a)
        c.fill_(1.5)
        return c.t(), (c * a).sum()
    if mode == "copy":
        c.copy_(a)
        c.copy_(lib.ones(2, 3, dtype=lib.float64))
        return c + 0, a.sum()
    c[0].copy_(a[1])                    # "view": through a view of the capture
    c[0].zero_()
    return c[0] * 1, c.sum()


def _run(lib, mode):
    c = lib.zeros(2, 3, dtype=lib.float64)
    fn = lambda a: _body(lib, mode, c, a)         # noqa: E731
    f = tj.compile(fn) if lib is tj else fn
    seen = []
    for call in range(2):                           # the second call: the cached entry
        a = lib.tensor(np.arange(1.0, 7.0).reshape(2, 3) + call, requires_grad=True)
        outs = f(a)
        seen.append([o.requires_grad for o in outs] + [c.requires_grad])
        seen.append([o.detach().numpy().copy() for o in outs] + [c.detach().numpy().copy()])
        sum((o * (k + 1)).sum() for k, o in enumerate(outs)).backward()
        seen.append([a.grad.numpy().copy()])
        c.detach_()
    return seen


@pytest.mark.parametrize("mode", ["zero", "fill", "copy", "view"])
def test_overwritten_capture_keeps_requiring_grad_as_torch(mode):
    got, want = _run(tj, mode), _run(torch, mode)
    for g, w in zip(got, want):
        if isinstance(w[0], bool):
            assert g == w
        else:
            for x, y in zip(g, w):
                np.testing.assert_allclose(x, y, rtol=1e-12)


def test_fuzz_seed_90302_program():
    """The fuzzer's program, reduced: the output is a view of the zeroed capture."""
    got = []
    for lib in (tj, torch):
        c1 = lib.zeros(3, 3)
        def f(a):
            c1.copy_(a)
            c1.zero_()
            return lib.maximum(a, a * 2), c1.t()
        g = tj.compile(f) if lib is tj else f
        a = lib.ones(3, 3, requires_grad=True)
        outs = g(a)
        outs[1].sum().backward()        # raised: element 0 does not require grad
        got.append((outs[1].requires_grad, c1.requires_grad, a.grad.numpy()))
    assert got[0][:2] == got[1][:2] == (True, True)
    np.testing.assert_array_equal(got[0][2], got[1][2])
