"""tj.vmap against Python loops, torch.func.vmap, under compile (LLVM and the CUDA backend
through the fake CuPy), composed with grad, nested; randomness modes; every error case."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

import tracejit as tj
from randgraph import build, inputs, programs

torch = pytest.importorskip("torch")
rng = np.random.default_rng(0)


def _np(t):
    return t.numpy() if isinstance(t, tj.Tensor) else np.asarray(t)


def _loop(f, args, in_axes, size):
    outs = []
    for i in range(size):
        ex = [a if ax is None else np.take(a, i, axis=ax) for a, ax in zip(args, in_axes)]
        outs.append(f(*[tj.tensor(e) for e in ex]))
    if isinstance(outs[0], tuple):
        return tuple(np.stack([_np(o[k]) for o in outs]) for k in range(len(outs[0])))
    return np.stack([_np(o) for o in outs])


# -- the rules through the public API, on random programs (eager and compiled) ---------------
@settings(max_examples=25, deadline=None)
@given(programs)
def test_random_programs_match_a_loop(prog):
    f = build(prog)
    xs = [np.stack([a * (1 + 0.1 * i) for i in range(3)]) for a in inputs(1)]
    in_axes = (0, None, 0)
    args = [xs[0], inputs(2)[1], xs[2]]
    want = _loop(f, args, in_axes, 3)
    got = tj.vmap(f, in_axes=in_axes)(*[tj.tensor(a) for a in args])
    for g, w in zip(got, want):
        np.testing.assert_allclose(_np(g), w, rtol=1e-10, atol=1e-12)
    cf = tj.compile(tj.vmap(f, in_axes=in_axes))
    for g, w in zip(cf(*args), want):
        np.testing.assert_allclose(_np(g), w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,fn", [
    ("softmax", lambda x: tj.softmax(x, -1)),
    ("layer_norm", lambda x: tj.layer_norm(x, (4,))),
    ("index", lambda x: x[1:, ::2] * x[0, 1]),
    ("gather", lambda x: x[tj.tensor(np.array([2, 0, 2]))].sum(0)),
    ("cumsum_sort", lambda x: tj.cumsum(x, 1) + tj.sort(x, 0)[0]),
    ("argmax", lambda x: tj.argmax(x, 1) * 1.0),
    ("cat_pad", lambda x: tj.concatenate([x, x * 2], 0).sum(1)),
    ("matvec", lambda x: x @ x.T),
])
def test_library_ops_match_a_loop(name, fn):
    xs = rng.standard_normal((5, 3, 4))
    want = _loop(fn, [xs], [0], 5)
    np.testing.assert_allclose(_np(tj.vmap(fn)(tj.tensor(xs))), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(_np(tj.compile(tj.vmap(fn))(xs)), want, rtol=1e-10, atol=1e-12)


def test_conv_batch_of_images_and_of_weights():
    F = tj.nn.functional
    x, w = rng.standard_normal((2, 1, 3, 6, 6)), rng.standard_normal((2, 4, 3, 3, 3))
    want = np.stack([_np(F.conv2d(tj.tensor(x[i]), tj.tensor(w[i]), padding=1))
                     for i in range(2)])
    got = tj.vmap(lambda a, b: F.conv2d(a, b, padding=1))(tj.tensor(x), tj.tensor(w))
    np.testing.assert_allclose(_np(got), want, rtol=1e-10)
    ref = torch.func.vmap(lambda a, b: torch.nn.functional.conv2d(a, b, padding=1))(
        torch.tensor(x), torch.tensor(w))
    np.testing.assert_allclose(_np(got), ref.numpy(), rtol=1e-10)


# -- per-example gradients ---------------------------------------------------------------------
def _mlp_loss(params, x, y):
    w1, b1, w2 = params
    h = tj.tanh(x @ w1 + b1)
    return ((h @ w2 - y) ** 2).mean()


def _mlp_data(n=8):
    p = (rng.standard_normal((5, 16)) * 0.3, rng.standard_normal(16) * 0.1,
         rng.standard_normal((16, 2)) * 0.3)
    return p, rng.standard_normal((n, 5)), rng.standard_normal((n, 2))


def test_per_example_gradients_of_an_mlp_match_a_loop_and_torch_func():
    p, x, y = _mlp_data()
    tp = tuple(tj.tensor(a) for a in p)
    per_ex = tj.vmap(tj.grad(_mlp_loss), in_axes=(None, 0, 0))(tp, tj.tensor(x), tj.tensor(y))
    for k in range(3):
        want = np.stack([_np(tj.grad(_mlp_loss)(tp, tj.tensor(x[i]), tj.tensor(y[i]))[k])
                         for i in range(len(x))])
        np.testing.assert_allclose(_np(per_ex[k]), want, rtol=1e-10, atol=1e-12)

    def tloss(params, xi, yi):
        w1, b1, w2 = params
        return ((torch.tanh(xi @ w1 + b1) @ w2 - yi) ** 2).mean()
    ref = torch.func.vmap(torch.func.grad(tloss), in_dims=(None, 0, 0))(
        tuple(torch.tensor(a) for a in p), torch.tensor(x), torch.tensor(y))
    for k in range(3):
        np.testing.assert_allclose(_np(per_ex[k]), ref[k].numpy(), rtol=1e-10, atol=1e-12)
    compiled = tj.compile(tj.vmap(tj.grad(_mlp_loss), in_axes=(None, 0, 0)))
    for g, r in zip(compiled(p, x, y), ref):
        np.testing.assert_allclose(_np(g), r.numpy(), rtol=1e-10, atol=1e-12)


def test_grad_through_vmap_reaches_the_shared_weight():
    p, x, y = _mlp_data()
    w = tj.tensor(p[0], requires_grad=True)

    def total(w_):
        losses = tj.vmap(lambda xi, yi: _mlp_loss((w_, tj.tensor(p[1]), tj.tensor(p[2])),
                                                  xi, yi))(tj.tensor(x), tj.tensor(y))
        return losses.sum()
    total(w).backward()
    want = sum(_np(tj.grad(lambda w_: _mlp_loss((w_, tj.tensor(p[1]), tj.tensor(p[2])),
                                                 tj.tensor(x[i]), tj.tensor(y[i])))(
        tj.tensor(p[0]))) for i in range(len(x)))
    np.testing.assert_allclose(_np(w.grad), want, rtol=1e-10)
    g = tj.compile(tj.grad(total))(p[0])
    np.testing.assert_allclose(_np(g), want, rtol=1e-10)


def test_matmul_with_one_batched_side_is_one_gemm_in_the_compiled_graph():
    f = tj.compile(tj.vmap(lambda x, w: tj.tanh(x @ w), in_axes=(0, None)))
    x, w = rng.standard_normal((32, 7, 5)), rng.standard_normal((5, 3))
    text = f.lower(x, w).as_text()
    mm = [line for line in text.splitlines() if " matmul " in line]
    assert len(mm) == 1 and "f64[224,3]" in mm[0], text         # 32 * 7 rows, one GEMM
    np.testing.assert_allclose(_np(f(x, w)), np.tanh(x @ w), rtol=1e-12)


# -- axes -----------------------------------------------------------------------------------------
def test_in_axes_out_axes_variants():
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    ta, tb = tj.tensor(a), tj.tensor(b)
    f = lambda x, y: x[:, None] * y                                      # noqa: E731
    # a mapped over its last axis, b over its first (negative axes), result's batch last
    got = tj.vmap(f, in_axes=(-1, 0), out_axes=-1)(ta, tb)
    want = np.stack([a[:, i][:, None] * b[i] for i in range(4)], axis=-1)
    np.testing.assert_allclose(_np(got), want)
    ref = torch.func.vmap(f, in_dims=(-1, 0), out_dims=-1)(torch.tensor(a), torch.tensor(b))
    np.testing.assert_allclose(_np(got), ref.numpy())
    # PyTorch's spelling; None for a shared argument; a dict argument; several results
    got = tj.vmap(lambda d, s: (d["u"] * s, s.sum()), in_dims=({"u": 1}, None),
                  out_dims=(0, None))({"u": tb}, tj.tensor(np.arange(4.0)))
    np.testing.assert_allclose(_np(got[0]), b.T * np.arange(4.0))
    assert got[1].shape == () and float(got[1].item()) == 6.0
    # a result that does not depend on the batch is broadcast along it
    got = tj.vmap(lambda x: tj.tensor(2.0) + 0 * x.sum() * 0 + 1)(ta)
    assert got.shape == (3,)
    got = tj.vmap(lambda x, y: y * 2, in_axes=(0, None))(ta, tb)
    assert got.shape == (3, 4, 5)
    np.testing.assert_allclose(_np(got[1]), b * 2)


def test_nested_vmap_and_closures_over_the_outer_batch():
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    outer = tj.vmap(lambda x: tj.vmap(lambda y: (x * y).sum())(tj.tensor(b)))
    np.testing.assert_allclose(_np(outer(tj.tensor(a))), a @ b.T, rtol=1e-12)
    np.testing.assert_allclose(_np(tj.compile(outer)(a)), a @ b.T, rtol=1e-12)
    # vmap of vmap over two axes of one argument
    m = rng.standard_normal((2, 3, 4))
    got = tj.vmap(tj.vmap(lambda v: v / v.sum()))(tj.tensor(m))
    np.testing.assert_allclose(_np(got), m / m.sum(-1, keepdims=True))
    ref = torch.func.vmap(torch.func.vmap(lambda v: v / v.sum()))(torch.tensor(m))
    np.testing.assert_allclose(_np(got), ref.numpy())


def test_vmap_of_a_compiled_function_and_chunks():
    f = tj.compile(lambda x: tj.exp(x) * x.sum())
    xs = rng.standard_normal((7, 3))
    want = np.stack([np.exp(r) * r.sum() for r in xs])
    vf = tj.vmap(f)                       # the vmap of a compiled function is compiled
    np.testing.assert_allclose(_np(vf(tj.tensor(xs))), want, rtol=1e-12)
    np.testing.assert_allclose(_np(vf(xs)), want, rtol=1e-12)
    assert vf.cache_info().hits == 1 and vf.cache_info().entries == 1
    np.testing.assert_allclose(_np(tj.vmap(f, chunk_size=3)(tj.tensor(xs))), want, rtol=1e-12)
    py = tj.vmap(f.fn if hasattr(f, "fn") else f, chunk_size=4)
    np.testing.assert_allclose(_np(py(tj.tensor(xs))), want, rtol=1e-12)


def test_sizes_zero_and_one():
    f = lambda x: tj.tanh(x) @ tj.ones(3, 2, dtype=tj.float64)             # noqa: E731
    assert tj.vmap(f)(tj.zeros(0, 3, dtype=tj.float64)).shape == (0, 2)
    x = rng.standard_normal((1, 3))
    np.testing.assert_allclose(_np(tj.vmap(f)(tj.tensor(x))), np.tanh(x) @ np.ones((3, 2)))


# -- randomness -------------------------------------------------------------------------------
@pytest.mark.parametrize("compiled", [False, True])
def test_randomness_modes(compiled):
    xs = tj.zeros(4, 3, dtype=tj.float32)
    wrap = tj.compile if compiled else (lambda f: f)
    diff = wrap(tj.vmap(lambda x: x + tj.rand(3), randomness="different"))(xs).numpy()
    assert len({r.tobytes() for r in diff}) == 4 and (diff >= 0).all() and (diff < 1).all()
    same = wrap(tj.vmap(lambda x: x + tj.rand(3), randomness="same"))(xs).numpy()
    assert len({r.tobytes() for r in same}) == 1
    drop = wrap(tj.vmap(lambda x: tj.dropout(x + 1, 0.5), randomness="different"))(
        tj.ones(64, 16)).numpy()
    assert set(np.unique(drop)) <= {0.0, 4.0} and len({r.tobytes() for r in drop}) > 1
    with pytest.raises(RuntimeError, match=r"randomness='different'.*test_vmap\.py:\d+"):
        wrap(tj.vmap(lambda x: x + tj.rand(3)))(xs)


def test_randomness_different_follows_the_seed():
    f = tj.vmap(lambda x: x + tj.randn(2), randomness="different")
    tj.manual_seed(3)
    a = f(tj.zeros(5, 2)).numpy()
    b = f(tj.zeros(5, 2)).numpy()
    tj.manual_seed(3)
    np.testing.assert_array_equal(f(tj.zeros(5, 2)).numpy(), a)
    assert not np.array_equal(a, b)


# -- errors -----------------------------------------------------------------------------------
X = tj.tensor(rng.standard_normal((4, 3)))


@pytest.mark.parametrize("fn,what", [
    (lambda v: v.sum().item(), r"item\(\)"),
    (lambda v: v if v.sum() > 0 else -v, r"bool\(\)"),
    (lambda v: v[v > 0].sum(), "boolean mask"),
])
def test_batched_values_cannot_reach_python(fn, what):
    with pytest.raises(RuntimeError, match=what + r".*batched tensor.*tj\.vmap \(at "
                       r"test_vmap\.py:\d+\).*tj\.where"):
        tj.vmap(fn)(X)


def test_values_computed_inside_vmap_but_not_batched():
    w = tj.tensor(rng.standard_normal(3))
    with pytest.raises(RuntimeError, match=r"item\(\) needs a concrete value.*computed inside "
                       r"tj\.vmap \(at test_vmap\.py:\d+\).*in_axes=None"):
        tj.vmap(lambda v: v * w.sum().item())(X)
    # a shared argument stays concrete: it is not traced
    got = tj.vmap(lambda v, s: v * s.item(), in_axes=(0, None))(X, tj.tensor(2.0))
    np.testing.assert_allclose(_np(got), _np(X) * 2)


def test_in_place_write_of_a_batched_value_into_an_unbatched_tensor():
    buf = tj.zeros(3, dtype=tj.float64)

    def f(v):
        buf.add_(v)
        return v
    with pytest.raises(RuntimeError, match=r"batched value into the unbatched tensor f64\[3\] "
                       r"\(at test_vmap\.py:\d+\)"):
        tj.vmap(f)(X)
    assert (buf.numpy() == 0).all()


def test_bad_axes_and_sizes():
    with pytest.raises(ValueError, match=r"different sizes: 4 and 5.*test_vmap\.py"):
        tj.vmap(lambda a, b: a + b)(X, tj.ones(5, 3, dtype=tj.float64))
    with pytest.raises(ValueError, match="in_axes .* 2 entries .* 1 positional"):
        tj.vmap(lambda a: a, in_axes=(0, 0))(X)
    with pytest.raises(IndexError, match="in_axes=2 is out of range"):
        tj.vmap(lambda a: a, in_axes=2)(X)
    with pytest.raises(ValueError, match="only tensors can be mapped"):
        tj.vmap(lambda a, s: a * s)(X, 2.0)
    with pytest.raises(ValueError, match="at least one argument"):
        tj.vmap(lambda a: a, in_axes=None)(X)
    with pytest.raises(ValueError, match="out_axes=None for a result"):
        tj.vmap(lambda a: a, out_axes=None)(X)
    with pytest.raises(ValueError, match="randomness must be one of"):
        tj.vmap(lambda a: a, randomness="sometimes")
    with pytest.raises(ValueError, match="chunk_size"):
        tj.vmap(lambda a: a, chunk_size=0)


# -- composition with forward mode; in-place updates of mapped arguments ------------------------
def _f(x):
    return tj.sin(x) * x.sum()


def _tf(x):
    return torch.sin(x) * x.sum()


def test_vmap_of_jvp_and_jvp_of_vmap_match_torch_func():
    xs, ts = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    want = torch.func.vmap(lambda x, t: torch.func.jvp(_tf, (x,), (t,))[1])(
        torch.tensor(xs), torch.tensor(ts)).numpy()
    got = tj.vmap(lambda x, t: tj.jvp(_f, (x,), (t,))[1])(tj.tensor(xs), tj.tensor(ts))
    np.testing.assert_allclose(_np(got), want, rtol=1e-12)
    got = tj.compile(tj.vmap(lambda x, t: tj.jvp(_f, (x,), (t,))[1]))(xs, ts)
    np.testing.assert_allclose(_np(got), want, rtol=1e-12)
    _, got = tj.jvp(tj.vmap(_f), (tj.tensor(xs),), (tj.tensor(ts),))
    np.testing.assert_allclose(_np(got), want, rtol=1e-12)


def test_vmap_of_jacobians_and_hessians_match_torch_func():
    xs = rng.standard_normal((4, 3))
    want = torch.func.vmap(torch.func.jacfwd(_tf))(torch.tensor(xs)).numpy()
    np.testing.assert_allclose(_np(tj.vmap(tj.jacfwd(_f))(tj.tensor(xs))), want, rtol=1e-12)
    np.testing.assert_allclose(_np(tj.vmap(tj.jacrev(_f))(tj.tensor(xs))), want, rtol=1e-12)
    cube = lambda x: (x ** 3).sum()                                        # noqa: E731
    h = tj.vmap(tj.hessian(cube))(tj.tensor(xs))
    np.testing.assert_allclose(_np(h), np.stack([np.diag(6 * x) for x in xs]), rtol=1e-12)


def test_in_place_update_of_a_mapped_argument_is_written_back():
    a = np.arange(6.0).reshape(2, 3)
    x, tx = tj.tensor(a.copy()), torch.tensor(a.copy())

    def f(v):
        v.mul_(2)
        return v.sum()

    def tf(v):
        v.mul_(2)
        return v.sum()
    got = tj.vmap(f, in_axes=1)(x)
    want = torch.func.vmap(tf, in_dims=1)(tx)
    np.testing.assert_allclose(_np(got), want.numpy())
    np.testing.assert_allclose(_np(x), tx.numpy())                 # both doubled in place


def test_nested_randomness_and_a_module():
    inner = lambda m: tj.vmap(lambda v: v + tj.rand(()), randomness=m)     # noqa: E731
    both = tj.vmap(inner("different"), randomness="different")(tj.zeros(3, 4)).numpy()
    assert len(np.unique(both)) == 12
    rows = tj.vmap(inner("same"), randomness="different")(tj.zeros(3, 4)).numpy()
    assert all(len(np.unique(r)) == 1 for r in rows) and len(np.unique(rows)) == 3
    lin = tj.nn.Linear(4, 3)
    xs = tj.tensor(rng.standard_normal((5, 2, 4)).astype(np.float32))
    out = tj.vmap(lin)(xs)
    np.testing.assert_allclose(out.detach().numpy(), lin(xs).detach().numpy(), rtol=1e-6)
    out.sum().backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(),
                               np.ones((10, 3)).T @ xs.numpy().reshape(10, 4), rtol=1e-5)


def test_dump_prints_the_batched_graph(monkeypatch, capsys):
    monkeypatch.setenv("TRACEJIT_DUMP", "vmap")
    tj.vmap(lambda x, w: tj.tanh(x @ w), in_axes=(0, None))(
        tj.tensor(rng.standard_normal((6, 2, 3))), tj.tensor(rng.standard_normal((3, 4))))
    err = capsys.readouterr().err
    assert "tracejit vmap" in err and "matmul" in err and "f64[12,3]" in err


def test_vmap_inside_a_compiled_training_step_fills_grad():
    w0, xs = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    w = tj.tensor(w0, requires_grad=True)

    @tj.compile
    def step(x, scale):
        loss = tj.vmap(lambda xi, s: tj.tanh(w @ xi).sum() * s, in_axes=(0, None))(x, scale)
        loss = loss.sum()
        loss.backward()
        return loss
    for _ in range(2):
        w.grad = None
        step(xs, 0.5)
        h = np.tanh(xs @ w0.T)
        np.testing.assert_allclose(w.grad.numpy(), 0.5 * ((1 - h * h).T @ xs), rtol=1e-10)
    assert step.cache_info().misses == 1


def test_eager_vmap_on_the_cuda_device(fake_gpu):
    xs, w = rng.standard_normal((4, 3)), rng.standard_normal((3, 2))
    dev = lambda a: tj.tensor(a, device="cuda")                            # noqa: E731
    got = tj.vmap(lambda v, m: tj.tanh(v @ m), in_axes=(0, None))(dev(xs), dev(w))
    assert got.device == "cuda:0"
    np.testing.assert_allclose(got.cpu().numpy(), np.tanh(xs @ w), rtol=1e-12)
    tj.manual_seed(5)
    r = tj.vmap(lambda v: v * 0 + tj.rand(3, dtype=tj.float64), randomness="different")(
        dev(xs))
    assert r.device == "cuda:0"
    tj.manual_seed(5)
    on_cpu = tj.vmap(lambda v: v * 0 + tj.rand(3, dtype=tj.float64), randomness="different")(
        tj.tensor(xs))
    np.testing.assert_array_equal(r.cpu().numpy(), on_cpu.numpy())     # the same stream
