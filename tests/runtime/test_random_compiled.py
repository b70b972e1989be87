"""Random numbers inside compiled functions and dropout: fresh numbers per call, reproducible
from manual_seed, the same numbers as eager mode and the interpreter for the same generator
state, hidden seed/offset inputs in the IR, and dropout's forward, gradient and fusion."""
from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import fakecupy
import tracejit as tj
from tracejit.ir.interpret import interpret
from tracejit import devices


def _f32(*shape):
    return np.ones(shape, np.float32)


def test_every_call_gets_fresh_numbers_and_the_seed_repeats_them():
    @tj.compile
    def f(x):
        return x + tj.rand(3, 4), tj.randn(5)
    x = np.zeros((3, 4), np.float32)
    tj.manual_seed(3)
    a1, b1 = f(x)
    a2, b2 = f(x)
    assert not np.array_equal(a1.numpy(), a2.numpy())
    assert not np.array_equal(b1.numpy(), b2.numpy())
    tj.manual_seed(3)
    c1, d1 = f(x)
    c2, d2 = f(x)
    for p, q in ((a1, c1), (a2, c2), (b1, d1), (b2, d2)):
        assert np.array_equal(p.numpy(), q.numpy())


def test_offset_advances_by_the_number_of_random_ops_per_call():
    @tj.compile
    def f(x):
        return x * tj.rand(100, 100) + tj.randn(100, 100) - tj.rand_like(x)
    tj.manual_seed(11)
    f(_f32(100, 100))
    assert tj.get_rng_state() == (11, 3)
    f(_f32(100, 100))                                   # the cached fast path too
    assert tj.get_rng_state() == (11, 6)
    assert f.cache_info().hits == 1


def test_compiled_eager_and_interpreter_agree_for_one_state():
    """Stream k of a call at offset o draws what the k-th eager op draws at offset o + k."""
    def body(x):
        return x + tj.rand(37, 5), tj.randn(37, 5, dtype=tj.float64), tj.rand(1, dtype=tj.float64)
    x = np.zeros((37, 5), np.float32)
    tj.manual_seed(2024)
    eager = [t.numpy() for t in body(tj.tensor(x))]
    tj.manual_seed(2024)
    f = tj.compile(body)
    compiled = [t.numpy() for t in f(x)]
    graph = f.lower(x).graph
    interp = interpret(graph, [x, np.array(2024, np.int64), np.array(0, np.int64)])
    for k, (e, c, i) in enumerate(zip(eager, compiled, interp)):
        assert np.array_equal(e, i) and e.dtype == c.dtype
        if k == 1:      # normals: the backend's log and cos, within an ulp or two
            np.testing.assert_allclose(c, e, rtol=1e-14, atol=1e-14)
        else:           # uniforms: integer arithmetic, the same bits
            assert np.array_equal(e, c)


def test_normals_in_float32_agree_to_a_few_ulp():
    tj.manual_seed(5)
    eager = tj.randn(4096).numpy()
    tj.manual_seed(5)
    compiled = tj.compile(lambda: tj.randn(4096))().numpy()
    np.testing.assert_allclose(compiled, eager, rtol=2e-6, atol=2e-6)


def test_ir_dump_shows_the_hidden_inputs(capsys, monkeypatch):
    monkeypatch.setenv("TRACEJIT_DUMP", "ir")
    f = tj.compile(lambda x: tj.dropout(x, 0.25))
    f(_f32(8))
    cap = capsys.readouterr()
    out = cap.out + cap.err
    assert "%rng_seed: i64[], %rng_offset: i64[]" in out
    text = f.lower(_f32(8)).as_text()
    assert "random %rng_seed, %rng_offset {shape=[8]" in text and "stream=0" in text
    # a graph without random ops has no hidden inputs
    assert "rng" not in tj.compile(lambda x: x * 2).lower(_f32(8)).as_text()


def test_views_broadcasts_and_empty_shapes():
    @tj.compile
    def f(x, y):
        return x + tj.rand(1, 6), y + tj.rand(6, 4).T, tj.rand(0, 3), tj.rand()
    x, y = np.zeros((5, 6), np.float32), np.zeros((4, 6), np.float32)
    tj.manual_seed(9)
    a, b, c, d = (t.numpy() for t in f(x, y))
    tj.manual_seed(9)
    r1, r2, r3, r4 = tj.rand(1, 6).numpy(), tj.rand(6, 4).numpy(), tj.rand(0, 3), tj.rand()
    assert np.array_equal(a, np.broadcast_to(r1, (5, 6)))
    assert np.array_equal(b, r2.T)
    assert c.shape == (0, 3) and d.shape == () and d == r4.numpy()


def test_constructors_dtypes_and_errors():
    x = tj.ones(3, 4, dtype=tj.float64)
    assert tj.rand_like(x).dtype == tj.float64 and tj.randn_like(x).shape == (3, 4)
    for half in (tj.float16, tj.bfloat16):          # rounding never reaches 1.0
        h = tj.rand(1 << 16, dtype=half)
        assert h.dtype == half and (h.numpy() < 1).all() and (h.numpy() >= 0).all()
    assert tj.randn(8, dtype=tj.bfloat16).dtype == tj.bfloat16
    r = tj.rand(2, 3, requires_grad=True)
    assert r.requires_grad and r.is_leaf
    with pytest.raises(TypeError, match="rand: needs a floating-point dtype, got i64"):
        tj.rand(3, dtype=tj.int64)
    with pytest.raises(ValueError, match=r"randn: negative dimension in size \[2, -1\]"):
        tj.randn(2, -1)
    with pytest.raises(TypeError, match="manual_seed: the seed must be an int"):
        tj.manual_seed(1.5)


def test_randint():
    tj.manual_seed(1)
    k = tj.randint(3, 10, (1000,))
    assert k.dtype == tj.int64 and k.shape == (1000,)
    a = k.numpy()
    assert a.min() == 3 and a.max() == 9
    assert set(np.unique(a)) == set(range(3, 10))
    assert tj.randint(5, (2, 2), dtype=tj.int32).dtype == tj.int32
    tj.manual_seed(1)
    c = tj.compile(lambda: tj.randint(3, 10, (1000,)))()
    assert np.array_equal(c.numpy(), a)
    with pytest.raises(ValueError, match="randint: need low < high"):
        tj.randint(4, 4, (2,))


def test_threads_see_one_offset_sequence():
    """The generator hands out each offset once, whichever thread asks."""
    tj.manual_seed(0)
    seen = []

    def work():
        for _ in range(200):
            seen.append(tj.default_generator().reserve(1)[1])
    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(seen) == list(range(800))


# -- dropout ---------------------------------------------------------------------------------
def test_dropout_scales_kept_values_and_is_the_identity_in_eval():
    x = tj.tensor(np.arange(1, 10001, dtype=np.float32))
    y = tj.dropout(x, 0.3).numpy()
    kept = y != 0
    np.testing.assert_allclose(y[kept], x.numpy()[kept] / np.float32(0.7), rtol=1e-6)
    assert abs(kept.mean() - 0.7) < 0.03
    assert tj.dropout(x, 0.3, training=False) is x
    assert tj.dropout(x, 0.0) is x
    assert (tj.dropout(x, 1.0).numpy() == 0).all()
    with pytest.raises(ValueError, match="dropout: probability has to be between 0 and 1, "
                                         "but got 1.5"):
        tj.dropout(x, 1.5)
    with pytest.raises(TypeError, match=r"dropout: needs a floating-point tensor, got i64\[3\]"):
        tj.dropout(tj.tensor([1, 2, 3]), 0.5)


def test_dropout_propagates_nan_like_pytorch():
    x = tj.tensor(np.full(64, np.nan, np.float32))
    assert np.isnan(tj.dropout(x, 0.5).numpy()).all()


def test_dropout_gradient_uses_the_same_mask_eager():
    x = tj.tensor(np.linspace(1, 2, 1000, dtype=np.float32), requires_grad=True)
    y = tj.dropout(x, 0.4)
    w = np.arange(1000, dtype=np.float32)
    (y * tj.tensor(w)).sum().backward()
    mask = (y.detach().numpy() != 0).astype(np.float32)
    np.testing.assert_allclose(x.grad.numpy(), mask * w / np.float32(0.6), rtol=1e-6)


def test_dropout_gradient_uses_the_same_mask_compiled():
    """Through eager autograd (compiled forward, compiled backward), through tj.grad (one
    joint graph) and to second order (the backward node replays the graph with the call's
    own seed and offset)."""
    f = tj.compile(lambda x: tj.dropout(x, 0.5))
    xv = np.linspace(1, 2, 4096, dtype=np.float32)
    x = tj.tensor(xv, requires_grad=True)
    y = f(x)
    (y * y).sum().backward()
    mask = (y.detach().numpy() != 0).astype(np.float32)
    np.testing.assert_allclose(y.detach().numpy(), mask * xv * 2, rtol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), 2 * y.detach().numpy() * mask * 2, rtol=1e-6)

    x2 = tj.tensor(xv, requires_grad=True)
    y2 = f(x2)
    (g,) = tj.autograd.grad((y2 * y2).sum(), [x2], create_graph=True)
    g.sum().backward()                               # d/dx sum(2 * (m*2)**2 * x) = 8 m
    m2 = (y2.detach().numpy() != 0).astype(np.float32)
    np.testing.assert_allclose(x2.grad.numpy(), 8 * m2, rtol=1e-6)

    tj.manual_seed(21)
    gfn = tj.grad(tj.compile(lambda x, w: (tj.dropout(x, 0.25) * w).sum()))
    w = np.arange(4096, dtype=np.float32)
    gx = gfn(xv, w).numpy()
    tj.manual_seed(21)
    keep = tj.dropout(tj.ones(4096), 0.25).numpy() != 0     # the same stream, eagerly
    np.testing.assert_allclose(gx, keep * w / np.float32(0.75), rtol=1e-6)


def test_dropout_fuses_into_one_kernel():
    x = _f32(64, 128)
    f = tj.compile(lambda x, b: tj.dropout(tj.tanh(x + b), 0.1) * 2)
    kernels = f.lower(x, _f32(128)).kernels.splitlines()
    assert len(kernels) == 1 and "random" in kernels[0] and kernels[0].startswith("k0: loop")
    g = tj.grad(tj.compile(lambda x, w: (tj.dropout(x, 0.5) * w).sum()))
    kernels = g.lower(x, x).kernels.splitlines()
    assert sum("random" in k for k in kernels) == 1
    assert not any(k.split(":")[1].strip().startswith("loop") and "random" not in k
                   for k in kernels)


def test_eager_cuda_draws_the_cpu_generators_numbers_from_its_own_state(monkeypatch):
    fake = fakecupy.module()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(devices, "_cupy", None)
    tj.manual_seed(8)
    g = tj.rand(3, 4, device="cuda")
    assert g.device == "cuda:0" and isinstance(g._data, fakecupy.ndarray)
    assert tj.get_rng_state("cuda") == (8, 1) and tj.get_rng_state("cpu") == (8, 0)
    c = tj.rand(3, 4)
    assert np.array_equal(g.cpu().numpy(), c.numpy())


def test_checkpoint_recomputes_the_same_dropout_mask():
    """checkpoint's backward runs fn again: it must draw the forward's numbers (PyTorch's
    preserve_rng_state) and leave the generator where the program left it."""
    x = tj.tensor(np.linspace(1, 2, 1000, dtype=np.float32), requires_grad=True)
    y = tj.checkpoint(lambda v: tj.dropout(v * 2, 0.5), x)
    state = tj.get_rng_state()
    y.sum().backward()
    assert tj.get_rng_state() == state
    keep = (y.detach().numpy() != 0).astype(np.float32)
    np.testing.assert_allclose(x.grad.numpy(), keep * 4, rtol=1e-6)


def test_dropout_backward_regenerates_the_mask_instead_of_saving_it():
    """Through eager autograd a compiled dropout saves only the 0-d seed and offset: its
    backward kernel regenerates the mask (and fuses it with the gradient's product)."""
    f = tj.compile(lambda x, w: tj.dropout(x * w, 0.5))
    xv = np.linspace(1, 2, 64 * 128, dtype=np.float32).reshape(64, 128)
    x = tj.tensor(xv, requires_grad=True)
    y = f(x, xv)
    y.sum().backward()
    keep = (y.detach().numpy() != 0).astype(np.float32)
    np.testing.assert_allclose(x.grad.numpy(), keep * 2 * xv, rtol=1e-6)
    entry = next(iter(f._cache.values()))
    fwd, bwd, n_out = next(iter(entry.grad_cache.values()))[:3]
    residuals = fwd.graph.outputs[n_out:]
    assert sorted(str(v.aval) for v in residuals) == ["f32[64,128]", "i64[]", "i64[]"]
    assert "random" in bwd.stage_text("kernels")


def test_bernoulli():
    probs = np.linspace(0, 1, 11, dtype=np.float32)
    tj.manual_seed(4)
    draws = np.stack([tj.bernoulli(tj.tensor(probs)).numpy() for _ in range(4000)])
    assert draws.dtype == np.float32 and set(np.unique(draws)) <= {0.0, 1.0}
    assert (draws[:, 0] == 0).all() and (draws[:, -1] == 1).all()
    np.testing.assert_allclose(draws.mean(0), probs, atol=0.03)
    tj.manual_seed(4)
    u = tj.rand(11).numpy()
    assert np.array_equal(draws[0], (u < probs).astype(np.float32))
    tj.manual_seed(4)
    c = tj.compile(lambda p: tj.bernoulli(p))(probs).numpy()
    assert np.array_equal(c, draws[0])
    assert tj.bernoulli(tj.zeros(5, dtype=tj.float64), 0.5).dtype == tj.float64
    with pytest.raises(TypeError, match="bernoulli: needs floating-point probabilities"):
        tj.bernoulli(tj.tensor([1, 0]))
