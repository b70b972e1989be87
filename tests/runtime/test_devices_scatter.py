"""Eager indexing backward on "cuda" tensors (issue #10, item 10): the gradient of a gather is a
scatter-add, which on CuPy arrays must use CuPy's own scatter_add (CuPy has no np.add.at).
Checked against the strict CuPy stand-in here, and on a real GPU in the `gpu` test below."""
from __future__ import annotations

import numpy as np
import pytest

import fakecupy
import tracejit as tj
from conftest import assert_close


def test_the_stand_in_refuses_ufunc_at_like_cupy(fake_gpu):
    a = fakecupy.asarray(np.zeros(3, np.float32))
    i = fakecupy.asarray(np.array([0, 0, 2]))
    v = fakecupy.asarray(np.ones(3, np.float32))
    with pytest.raises(TypeError):
        np.add.at(a, (i,), v)
    a.scatter_add((i,), v)                  # CuPy's spelling: repeated indices accumulate
    np.testing.assert_array_equal(a.get(), [2.0, 0.0, 1.0])
    with pytest.raises(TypeError):          # and it takes no host arrays
        a.scatter_add((np.array([0, 1]),), v[:2])


def _embedding_loss(w, idx, pos):
    h = w[idx] + pos                      # token embedding (repeated ids) + position rows
    return (tj.tanh(h) ** 2).sum() + w[:, np.array([2, 0, 2])].sum()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_embedding_backward_on_the_device_matches_cpu(fake_gpu, dtype):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((7, 3)).astype(dtype)
    p0 = rng.standard_normal((5, 3)).astype(dtype)
    ids = np.array([3, 1, 3, 3, 0])
    wc, pc = tj.tensor(w0, requires_grad=True), tj.tensor(p0, requires_grad=True)
    _embedding_loss(wc, ids, pc).backward()
    wg = tj.tensor(w0, device="cuda", requires_grad=True)
    pg = tj.tensor(p0, device="cuda", requires_grad=True)
    idx = tj.tensor(ids, device="cuda")
    _embedding_loss(wg, idx, pg).backward()
    assert wg.grad.device == "cuda:0" and isinstance(wg.grad._data, fakecupy.ndarray)
    assert wg.grad.dtype == wc.grad.dtype
    assert_close(wg.grad.cpu(), wc.grad, rtol=1e-6, atol=1e-6)
    assert_close(pg.grad.cpu(), pc.grad, rtol=1e-6, atol=1e-6)


def test_second_order_through_device_indexing(fake_gpu):
    w0 = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    ids = np.array([2, 2, 0])

    def f(w, i):
        return (w[i] ** 3).sum()
    wg = tj.tensor(w0, device="cuda", requires_grad=True)
    (g,) = tj.autograd.grad(f(wg, tj.tensor(ids, device="cuda")), wg, create_graph=True)
    (gg,) = tj.autograd.grad(g.sum(), wg)
    counts = np.bincount(ids, minlength=3)[:, None]
    assert_close(g.cpu(), 3 * w0 ** 2 * counts)
    assert_close(gg.cpu(), 6 * w0 * counts)


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embedding_backward_on_a_real_gpu(dtype):
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((50, 8)).astype(dtype)
    p0 = rng.standard_normal((64, 8)).astype(dtype)
    ids = rng.integers(0, 50, 64)
    ids[:10] = 7                              # many repeats: the adds must be atomic
    wc, pc = tj.tensor(w0, requires_grad=True), tj.tensor(p0, requires_grad=True)
    _embedding_loss(wc, ids, pc).backward()
    wg = tj.tensor(w0, device="cuda", requires_grad=True)
    pg = tj.tensor(p0, device="cuda", requires_grad=True)
    _embedding_loss(wg, tj.tensor(ids, device="cuda"), pg).backward()
    assert wg.grad.device == "cuda:0"
    assert_close(wg.grad.cpu(), wc.grad, rtol=1e-5, atol=1e-5)
    assert_close(pg.grad.cpu(), pc.grad, rtol=1e-5, atol=1e-5)


def _tiny_gpt_loss(p, idx, tgt, mask):
    """One causal self-attention layer with token and position embeddings, as nanoGPT."""
    t, c = p["wpe"].shape
    x = tj.layer_norm(p["wte"][idx] + p["wpe"][np.arange(t)], (c,))
    q, k, v = x @ p["wq"], x @ p["wk"], x @ p["wv"]
    att = tj.softmax(tj.where(mask, (q @ k.transpose(-1, -2)) * c ** -0.5, float("-inf")), -1)
    logits = (att @ v) @ p["head"]
    return tj.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))


def _train_tiny_gpt_on_both():
    rng = np.random.default_rng(2)
    vocab, t, c = 11, 6, 8
    shapes = {"wte": (vocab, c), "wpe": (t, c), "wq": (c, c), "wk": (c, c), "wv": (c, c),
              "head": (c, vocab)}
    init = {k: (0.3 * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}
    idx, tgt = rng.integers(0, vocab, (2, t)), rng.integers(0, vocab, (2, t))
    mask = np.tril(np.ones((t, t), bool))
    results = {}
    for dev in ("cpu", "cuda"):
        p = {k: tj.tensor(v, device=dev, requires_grad=True) for k, v in init.items()}
        losses = []
        for _ in range(3):                    # a few SGD steps, all eager
            loss = _tiny_gpt_loss(p, tj.tensor(idx, device=dev), tj.tensor(tgt, device=dev),
                                  tj.tensor(mask, device=dev))
            loss.backward()
            with tj.no_grad():
                for w in p.values():
                    w -= 0.5 * w.grad
                    w.grad = None
            losses.append(loss.item())
        assert all(w.device == dev for w in p.values())
        results[dev] = (losses, {k: w.detach().cpu().numpy() for k, w in p.items()})
    return results


def test_tiny_gpt_trains_eagerly_on_the_device_like_on_the_cpu(fake_gpu):
    results = _train_tiny_gpt_on_both()
    assert results["cuda"][0] == pytest.approx(results["cpu"][0], rel=1e-6)
    assert results["cuda"][0][-1] < results["cuda"][0][0]
    for k, w in results["cpu"][1].items():
        assert_close(results["cuda"][1][k], w, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
def test_tiny_gpt_trains_eagerly_on_a_real_gpu():
    results = _train_tiny_gpt_on_both()
    assert results["cuda"][0] == pytest.approx(results["cpu"][0], rel=1e-4)
    for k, w in results["cpu"][1].items():
        assert_close(results["cuda"][1][k], w, rtol=1e-4, atol=1e-5)


def test_inplace_updates_on_device_tensors(fake_gpu):
    # CuPy's flags have no `writeable`: an SGD step `w -= lr * w.grad` used to raise there
    w0 = np.array([1.0, -2.0, 3.0], np.float32)
    w = tj.tensor(w0, device="cuda", requires_grad=True)
    (w * w).sum().backward()
    with tj.no_grad():
        w -= 0.25 * w.grad
    np.testing.assert_array_equal(w.detach().cpu().numpy(), w0 - 0.5 * w0)
    v = tj.tensor(w0, device="cuda")
    v.mul_(2).add_(1).clamp_(max=4.0)
    np.testing.assert_array_equal(v.cpu().numpy(), np.minimum(2 * w0 + 1, 4.0))
    v.zero_()
    assert isinstance(v._data, fakecupy.ndarray) and not v.cpu().numpy().any()
