"""Differences from torch eager found by the extended eager fuzzer (tests/eager_fuzz_ext.py,
seeds 90000 and up), each checked against torch."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tracejit as tj  # noqa: E402
import tracejit.nn.functional as F  # noqa: E402


def _same(a, b) -> None:
    a = a.detach().numpy()
    b = b.detach().numpy()
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_with_zero_widths_is_a_new_tensor(mode):
    # seed 90270: F.pad(x, (0, 0), mode="reflect") returned x itself, so an in-place op on
    # the result changed x (and a leaf's fill_ was refused as torch's is not)
    data = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    outs = []
    for lib, fn in ((tj, F), (torch, torch.nn.functional)):
        x = lib.tensor(data, requires_grad=True)
        y = fn.pad(x, (0, 0), mode=mode)
        assert y is not x
        y2 = y * 1
        y2.sum().backward()
        with lib.no_grad():
            y.add_(10)
        outs.append((x, y))
    (xt, yt), (xh, yh) = outs
    _same(xt, xh)                   # unchanged by the write into the result
    _same(yt, yh)
    _same(xt.grad, xh.grad)


@pytest.mark.parametrize("shape, dim, sizes", [
    ((0, 1), -1, (1, -1)),                  # seed 90182: -1 was read against the whole (empty)
    ((0, 4), -1, (2, -1)),                  # tensor, so reshape refused it
    ((3, 0), 1, (2, -1)),
    ((2, 6), 1, (-1, 3)),
])
def test_unflatten_infers_minus_one_from_its_dim(shape, dim, sizes):
    _same(tj.zeros(*shape).unflatten(dim, sizes), torch.zeros(*shape).unflatten(dim, sizes))


@pytest.mark.parametrize("sizes", [(4, -1), (2, 2), (-1, -1)])
def test_unflatten_refuses_sizes_that_do_not_fit(sizes):
    with pytest.raises(RuntimeError):
        torch.zeros(2, 6).unflatten(1, sizes)
    with pytest.raises(RuntimeError, match="unflatten"):
        tj.zeros(2, 6).unflatten(1, sizes)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_diff_of_bools_is_xor_at_every_order(n):
    # seed 90262: diff of a bool tensor raised (bool subtraction is refused); torch xors
    a = np.array([[True, False, False, True, True], [False, False, True, True, False]])
    for dim in (0, 1):
        _same(tj.tensor(a).diff(n=n, dim=dim), torch.tensor(a).diff(n=n, dim=dim))


def test_sign_gives_a_zero_gradient_as_torch():
    # seed 90228: x.sign() gave x.grad None where torch gives zeros (floor already gave zeros):
    # an optimizer skips a parameter whose grad is None, so weight decay then differed
    data = np.array([0.5, -1.5, 0.0], np.float32)
    grads = []
    for lib in (tj, torch):
        x = lib.tensor(data, requires_grad=True)
        (x.sign() * 2 + x.floor()).sum().backward()
        grads.append(x.grad)
    _same(*grads)
    w = tj.nn.Parameter(tj.tensor(data))
    f = tj.compile(lambda w: (w.sign() * 3).sum())
    f(w).backward()
    _same(w.grad, torch.zeros(3))


@pytest.mark.parametrize("self_dtype, src_dtype", [("int64", "float16"), ("float32", "float64")])
def test_scatter_with_an_empty_index_still_checks_the_source_dtype(self_dtype, src_dtype):
    # eager fuzzer seeds 82514, 82939: an empty index skipped the dtype check torch makes
    def run(lib, inplace):
        x = lib.zeros(3, dtype=getattr(lib, self_dtype))
        idx, src = lib.zeros(0, dtype=lib.int64), lib.zeros(0, dtype=getattr(lib, src_dtype))
        return x.scatter_(0, idx, src) if inplace else x.scatter(0, idx, src)
    for inplace in (False, True):
        with pytest.raises(RuntimeError):
            run(torch, inplace)
        with pytest.raises(RuntimeError, match="scatter"):
            run(tj, inplace)
    x = np.arange(3.0)
    _same(tj.tensor(x).scatter(0, tj.zeros(0, dtype=tj.int64), tj.zeros(0, dtype=tj.float64)),
          torch.tensor(x).scatter(0, torch.zeros(0, dtype=torch.int64),
                                  torch.zeros(0, dtype=torch.float64)))


_EDGE = np.array([-88.0, -25.0, -18.0, -10.0, -1e-5, -3e-7, 0.0, 1e-6, 0.5, 19.9, 30.0])


@pytest.mark.parametrize("name", ["elu", "celu", "selu", "softplus", "logsigmoid", "mish"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_activations_keep_relative_accuracy_at_small_and_large_inputs(name, dtype):
    # seed 91180: elu computed exp(x) - 1, which cancels near 0 (elu(-3e-7) was -3.6e-7);
    # softplus computed log(1 + exp(x)), 0 for x < -17 in float32 (torch: exp(x)); logsigmoid
    # took softplus's threshold (logsigmoid(-25) was -25 exactly in float64)
    a = _EDGE.astype(dtype)
    got = []
    for lib in (tj, torch):
        x = lib.tensor(a, requires_grad=True)
        y = getattr(lib.nn.functional, name)(x)
        (g,) = lib.autograd.grad(y.sum(), x)
        got.append((y.detach().numpy(), g.numpy()))
    eps = 1e-6 if dtype == "float32" else 1e-14
    for mine, ref in zip(got[0], got[1]):
        rel = np.abs(np.asarray(mine) - ref) / np.maximum(np.abs(ref), np.finfo(dtype).tiny)
        assert rel.max() < eps, (name, rel)
    compiled = tj.compile(lambda x: getattr(tj.nn.functional, name)(x))(tj.tensor(a)).numpy()
    ref = got[1][0]
    assert (np.abs(compiled - ref) / np.maximum(np.abs(ref), np.finfo(dtype).tiny)).max() < eps


@pytest.mark.parametrize("shape2, dim", [((1, 1), -1), ((1, 4), 0), ((4,), 1), ((3, 1), 1)])
def test_cosine_similarity_broadcasts_before_the_norms(shape2, dim):
    # seed 91897: an operand of size 1 along dim was normalized before broadcasting, so the
    # result was sqrt(n) times torch's (cosine_similarity(x[3, 4], y[1, 1]) was 2x)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal(shape2).astype(np.float32)
    outs = []
    for lib in (tj, torch):
        x, y = lib.tensor(a, requires_grad=True), lib.tensor(b, requires_grad=True)
        r = lib.nn.functional.cosine_similarity(x, y, dim=dim)
        (r * lib.tensor(np.arange(r.numel(), dtype=np.float32).reshape(r.shape))).sum().backward()
        outs.append((r.detach().numpy(), x.grad.numpy(), y.grad.numpy()))
    for mine, ref in zip(*outs):
        np.testing.assert_allclose(mine, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("call", [
    lambda lib, x: x.rot90(0, (0, 1)),          # seed 93254: k % 4 == 0 returned x itself
    lambda lib, x: x.rot90(4, (0, 1)),
    lambda lib, x: lib.nn.functional.interpolate(x[None], scale_factor=1.0)[0],
    lambda lib, x: lib.nn.functional.interpolate(x[None], size=2, mode="linear")[0],
])
def test_identity_cases_return_a_new_tensor(call):
    data = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    ends = []
    for lib in (tj, torch):
        x = lib.tensor(data)
        y = call(lib, x)
        y.add_(100)                 # must not reach x
        ends.append((x, y))
    _same(ends[0][0], ends[1][0])
    _same(ends[0][1], ends[1][1])


def test_sub_inplace_with_alpha_refuses_a_bool_operand():
    # seed 93430: x.sub_(mask, alpha=3) scaled the mask to int64 first and ran
    for lib in (torch, tj):
        x = lib.tensor([1.0, 2.0])
        with pytest.raises((RuntimeError, TypeError), match="ub"):
            x.sub_(lib.tensor([True, False]), alpha=3)
    x, y = tj.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])
    _same(x.sub_(tj.tensor([0.5, 1.0]), alpha=3), y.sub_(torch.tensor([0.5, 1.0]), alpha=3))
    xi, yi = tj.tensor([1, 2]), torch.tensor([1, 2])
    _same(xi.sub_(tj.tensor([4, 1]), alpha=2), yi.sub_(torch.tensor([4, 1]), alpha=2))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_round_with_decimals_computes_in_float32(dtype):
    # seed 95906: float16 x * 10 was rounded to float16 first (1.6504 -> 16.5 -> 1.6; torch 1.7)
    a = (np.random.default_rng(0).standard_normal(4000) * 30).astype(np.float32)
    for d in (1, -1):
        want = torch.tensor(a).to(getattr(torch, dtype)).round(decimals=d).float().numpy()
        got = tj.tensor(a).to(getattr(tj, dtype)).round(decimals=d)
        assert got.dtype is getattr(tj, dtype)
        np.testing.assert_array_equal(np.asarray(got.float().numpy()), want)


@pytest.mark.parametrize("k, d, shape", [(3, 1, (2, 3)), (0, 0, (2, 3)), (6, None, (2, 3)),
                                         (1, None, ()), (2, 0, (2, 2))])
def test_roll_that_moves_nothing_is_a_copy_when_compiled(k, d, shape):
    # compiled seed 90402: a roll by a multiple of the size returned its input inside
    # tj.compile, so a later in-place change of the input in the same call showed through
    def f(lib, p):
        r = p.roll(k, d) if d is not None else p.roll(k)
        with lib.no_grad():
            p.add_(1)
        return r
    data = np.arange(6.0)[:int(np.prod(shape))].reshape(shape)
    want = f(torch, torch.tensor(data))
    _same(f(tj, tj.tensor(data)), want)
    _same(tj.compile(lambda p: f(tj, p))(tj.tensor(data)), want)
