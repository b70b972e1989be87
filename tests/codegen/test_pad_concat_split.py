"""CPU loop kernels whose output is a sum of zero pads along one axis over disjoint ranges (a
concatenation as the reverse-mode transform writes the gradient of split/chunk) run one loop
per range, each evaluating only its operand (codegen/schedule_pads.py). Checked bit for bit
against the reference interpreter (which adds the zeros: -0.0 becomes +0.0), with gaps no
pad covers, pieces of width 1 and 0, transposed and non-contiguous operands, integer data,
and the cases left alone (overlapping pads, padding along the threads' axis)."""
import numpy as np
import pytest

import tracejit as tj

F = tj.nn.functional


def _both(fn, *args):
    got = tj.compile(fn)(*args)
    want = tj.compile(fn, backend="interpreter")(*args)
    return got.numpy(), want.numpy()


def _same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    view = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]
    np.testing.assert_array_equal(a.view(view) if a.dtype.kind == "f" else a,
                                  b.view(view) if b.dtype.kind == "f" else b)


def _qkv_grad_like(q, kT, v):
    b, h, t, d = q.shape
    a = q.transpose(1, 2).reshape(b, t, h * d)
    k = kT.permute(0, 3, 1, 2).reshape(b, t, h * d)
    c = v.transpose(1, 2).reshape(b, t, h * d)
    n = h * d
    return F.pad(a, (0, 2 * n)) + F.pad(k, (n, n)) + F.pad(c, (2 * n, 0))


def test_attention_gradient_concat_splits_and_matches_bits():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((8, 4, 64, 32)).astype(np.float32)
    kT = rng.standard_normal((8, 4, 32, 64)).astype(np.float32)
    v = rng.standard_normal((8, 4, 64, 32)).astype(np.float32)
    q[0, 0, 0, :4] = -0.0                                  # -0.0 + 0.0 is +0.0
    f = tj.compile(_qkv_grad_like)
    loops = f.lower(q, kT, v).loops
    assert "split at its operands' ranges" in loops
    assert "for i3 in [128, 256)" in loops
    got, want = _both(_qkv_grad_like, q, kT, v)
    _same_bits(got, want)
    cat = np.concatenate([q.transpose(0, 2, 1, 3).reshape(8, 64, 128),
                          kT.transpose(0, 3, 1, 2).reshape(8, 64, 128),
                          v.transpose(0, 2, 1, 3).reshape(8, 64, 128)], -1)
    np.testing.assert_array_equal(got, cat)
    assert not np.signbit(got[0, 0, :4]).any()


@pytest.mark.parametrize("widths", [(1, 5, 0, 3), (0, 7, 2, 1), (3, 1, 1, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_gaps_and_narrow_pieces(widths, dtype):
    rng = np.random.default_rng(sum(widths))
    gap0, w1, gap1, w2 = widths
    n = gap0 + w1 + gap1 + w2 + 2                          # 2 more columns no pad covers
    a = (rng.standard_normal((3, 4, w1)) * 5).astype(dtype)
    b = (rng.standard_normal((3, 4, w2)) * 5).astype(dtype)

    def fn(a, b):
        return F.pad(a, (gap0, n - gap0 - w1)) + F.pad(b, (gap0 + w1 + gap1, 2))
    got, want = _both(fn, a, b)
    _same_bits(got, want)
    assert got.shape == (3, 4, n)


def test_middle_axis_non_contiguous_inputs_and_size_one_axes():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((5, 6, 2, 4)).astype(np.float32)
    a = base[:, ::2, 1, :]                                 # [5, 3, 4], strided
    b = rng.standard_normal((5, 2, 4)).astype(np.float32)
    c = rng.standard_normal((5, 1, 4)).astype(np.float32)

    def fn(a, b, c):
        return (F.pad(a, (0, 0, 0, 3)) + F.pad(b, (0, 0, 3, 1))) + F.pad(c, (0, 0, 5, 0))
    f = tj.compile(fn)
    assert "split at its operands' ranges" in f.lower(a, b, c).loops
    got, want = _both(fn, a, b, c)
    _same_bits(got, want)
    np.testing.assert_array_equal(got, np.concatenate([a, b, c], axis=1))


def test_overlapping_pads_and_threads_axis_left_alone():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal((4, 5)).astype(np.float32)

    def overlap(a, b):
        return F.pad(a, (0, 2)) + F.pad(b, (2, 0))        # columns 2..4 hold a + b
    f = tj.compile(overlap)
    assert "split at" not in f.lower(a, b).loops
    got, want = _both(overlap, a, b)
    _same_bits(got, want)

    def rows(a, b):
        return F.pad(a, (0, 0, 0, 4)) + F.pad(b, (0, 0, 4, 0))   # along axis 0
    assert "split at" not in tj.compile(rows).lower(a, b).loops
    got, want = _both(rows, a, b)
    _same_bits(got, want)


def test_split_gradient_in_a_training_step():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 16, 24)) * 0.5              # float64: a tight comparison
    w = rng.standard_normal((24, 24)) * 0.5

    def loss(w, x):
        q, k, v = (x @ w).split(8, dim=2)
        return ((q * k).sum(-1, keepdim=True) * v).tanh().sum()
    g = tj.compile(tj.grad(loss))(w, x).numpy()
    ge = tj.grad(loss)(tj.tensor(w), tj.tensor(x)).numpy()
    np.testing.assert_allclose(g, ge, rtol=1e-12, atol=1e-12)
    torch = pytest.importorskip("torch")
    tw = torch.tensor(w, requires_grad=True)
    q, k, v = (torch.tensor(x) @ tw).split(8, dim=2)
    ((q * k).sum(-1, keepdim=True) * v).tanh().sum().backward()
    np.testing.assert_allclose(g, tw.grad.numpy(), rtol=1e-10, atol=1e-12)
