"""The lean backward's input buffers (tracer/grad_buffers.py): a gradient sum the engine
allocated is updated in place by later terms, a slice's gradient is added into its region of
the input's buffer (no zero-padded copy per slice), and a leaf's `.grad` takes such a sum
without a copy. Checked against torch, and that nothing a user, a hook, retain_grad, another
gradient or a saved value can see is ever written."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.ir.primitives import P
from tracejit.tracer import eager
from tracejit.tracer.eager import Arr
from tracejit.tracer.grad_buffers import Owned, add_into

torch = pytest.importorskip("torch")


def _pair(a, requires_grad=True):
    return (tj.tensor(a, requires_grad=requires_grad),
            torch.tensor(a, requires_grad=requires_grad))


def _close(t_tj, t_torch, dtype=np.float64):
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(t_tj.numpy(), t_torch.detach().numpy(), rtol=tol, atol=tol)


def _cell(lib, x, h, c, w, u, b, H):
    gates = x @ w.T + h @ u.T + b
    i, f, g, o = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:]
    c = lib.sigmoid(f) * c + lib.sigmoid(i) * lib.tanh(g)
    return lib.sigmoid(o) * lib.tanh(c), c


def test_gate_slices_need_no_pad(monkeypatch):
    """An LSTM cell's four gate slices add their gradients into one buffer: the pad that
    SliceBackward0's rule applies (a zero array of the whole input per slice) never runs."""
    eager.infer_cache_clear()               # plans recorded from here, with the counting pad
    pads = []
    real = P.pad.impl

    def counting(*a, **k):
        pads.append(1)
        return real(*a, **k)
    monkeypatch.setattr(P.pad, "impl", counting)
    rng = np.random.default_rng(0)
    H = 5
    arrays = [rng.standard_normal(s) for s in ((3, 4), (3, H), (3, H), (4 * H, 4), (4 * H, H),
                                               (4 * H,))]
    x, h, c, w, u, b = [_pair(a) for a in arrays]
    for step in range(2):                   # records the plans, then replays them
        hn, cn = _cell(tj, *[v[0] for v in (x, h, c, w, u, b)], H)
        (hn.sum() + (cn * cn).sum()).backward()
    assert pads == []
    hn, cn = _cell(torch, *[v[1] for v in (x, h, c, w, u, b)], H)
    (hn.sum() + (cn * cn).sum()).backward()
    for v in (x, h, c, w, u, b):            # (tracejit's .grad: two passes accumulated)
        _close(v[0].grad, 2 * v[1].grad)


_KEYS = {
    "gates": lambda v: [v[:, :3], v[:, 3:6], v[:, 6:9], v[:, 9:]],
    "overlapping": lambda v: [v[:, :7], v[:, 4:], v[1:, 2:9]],
    "strided": lambda v: [v[:, ::2], v[:, 1::3], v[::2, 5:]],
    "whole_and_pieces": lambda v: [v, v[:, :4], v[:], v[1:3, 2:6]],
    "piece_twice": lambda v: [v[:, 2:5], v[:, 2:5], v[0:1, :]],
    "empty_piece": lambda v: [v[:, 4:4], v[:0], v[:, 1:2]],
    "int_index": lambda v: [v[1], v[:, 3:5], v[-1]],
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pattern", sorted(_KEYS))
def test_slice_gradients_match_torch(pattern, dtype):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 12)).astype(dtype)
    weights = [rng.standard_normal((4, 12)).astype(dtype) for _ in range(4)]
    for _ in range(2):                      # the second pass replays recorded plans
        x, xt = _pair(a)
        for lib, v in ((tj, x * 1.5), (torch, xt * 1.5)):
            loss = 0.0
            for k, p in enumerate(_KEYS[pattern](v)):
                wk = weights[k][tuple(slice(0, n) for n in p.shape)]
                wk = tj.tensor(wk) if lib is tj else torch.tensor(wk)
                loss = loss + (lib.tanh(p) * wk).sum()
            loss.backward()
        _close(x.grad, xt.grad, dtype)
        assert x.grad.dtype == x.dtype and x.grad.numpy().flags.c_contiguous


def test_hook_keeps_its_argument():
    """A hook's argument is the gradient sum itself: later terms must not reach it."""
    rng = np.random.default_rng(2)
    (w, wt), (v, vt) = _pair(rng.standard_normal((3, 6))), _pair(rng.standard_normal((3, 6)))
    kept, kept_t = [], []
    for lib, a, b, store in ((tj, w, v, kept), (torch, wt, vt, kept_t)):
        y = a * 2.0
        y.register_hook(lambda g, s=store: s.append(g))
        z = (y * b).sum() + (y[:, :3] ** 2).sum() + lib.tanh(y).sum() + (y[:, 1:] * 3.0).sum()
        z.backward()
    snapshot = kept[0].numpy().copy()
    _close(kept[0], kept_t[0])
    _close(w.grad, wt.grad)
    (w * 5.0).sum().backward()              # a later pass does not touch it either
    np.testing.assert_array_equal(kept[0].numpy(), snapshot)


@pytest.mark.parametrize("order", ["other_term_first", "other_term_last"])
def test_retained_grad_is_not_written_by_later_terms(order):
    """s.grad (retain_grad) is the sum reaching s; add's rule passes that same array on to x,
    where more terms arrive: they make a new sum, never one written into s.grad."""
    rng = np.random.default_rng(3)
    (x, xt) = _pair(rng.standard_normal((4, 6)))
    res = []
    for lib, a in ((tj, x), (torch, xt)):
        s = a + 0.0
        s.retain_grad()
        piece = s[:, :2]
        piece.retain_grad()
        if order == "other_term_first":
            z = (a * 3.0).sum() + (s * s).sum() + (piece ** 3).sum() + (piece * 2.0).sum()
        else:
            z = (s * s).sum() + (piece ** 3).sum() + (piece * 2.0).sum() + (a * 3.0).sum()
        z.backward()
        res.append((s, piece))
    (s, piece), (st, piecet) = res
    _close(s.grad, st.grad)
    _close(piece.grad, piecet.grad)
    _close(x.grad, xt.grad)


def test_leaves_sharing_one_gradient_array_read_between_steps():
    """`w + b` hands one array to both leaves: each .grad is its own copy, and a .grad that
    took the engine's sum is updated in place by later steps as torch's (so a Tensor read
    between steps is the live .grad, and the other leaf's is never changed through it)."""
    rng = np.random.default_rng(4)
    (w, wt), (b, bt) = _pair(rng.standard_normal((3, 4))), _pair(rng.standard_normal((3, 4)))
    seen, seen_t = [], []
    for step in range(3):
        for lib, p, q, store in ((tj, w, b, seen), (torch, wt, bt, seen_t)):
            y = p + q
            loss = (y * y).sum() + (p * (step + 2.0)).sum() + (p[:, 1:] ** 2).sum()
            loss.backward()
            store.append((p.grad.numpy().copy() if lib is tj else p.grad.detach().numpy().copy(),
                          q.grad.numpy().copy() if lib is tj else q.grad.detach().numpy().copy()))
        _close(w.grad, wt.grad)
        _close(b.grad, bt.grad)
    g = w.grad
    (w * 1.0).sum().backward()
    assert g is w.grad                      # accumulated in place, as torch's
    for (a, c), (at, ct) in zip(seen, seen_t):
        np.testing.assert_allclose(a, at, rtol=1e-12)
        np.testing.assert_allclose(c, ct, rtol=1e-12)


def test_saved_values_and_rule_results_are_never_written():
    """A gradient term that is another value (add's pass-through of its incoming gradient,
    a transpose's view) is read, never written: the values a later node reads stay right."""
    rng = np.random.default_rng(5)
    (x, xt), (w, wt) = _pair(rng.standard_normal((5, 4))), _pair(rng.standard_normal((3, 4)))
    for lib, a, m in ((tj, x, w), (torch, xt, wt)):
        h = a @ m.T                         # (5, 3)
        h2 = h + 0.0
        z = (h2 * h).sum() + (h2[:, :2] * h[:, :2]).sum() + (a @ m.T).sum() + (h @ m).sum()
        z.backward()
    _close(x.grad, xt.grad)
    _close(w.grad, wt.grad)


def test_retain_graph_twice_through_slices():
    rng = np.random.default_rng(6)
    (x, xt) = _pair(rng.standard_normal((3, 8)))
    for lib, a in ((tj, x), (torch, xt)):
        v = a * 2.0
        z = (v[:, :4] * v[:, 4:]).sum() + (v[:, ::3] ** 2).sum()
        z.backward(retain_graph=True)
        z.backward()
    _close(x.grad, xt.grad)


def test_a_buffers_terms_are_read_and_only_its_own_sum_is_written():
    """add_into on a node's buffer: the first term is kept as it is; the second makes a sum
    the engine owns; later terms go into that sum in place; no term is ever written."""
    terms = [np.full((2, 3), float(k + 1)) for k in range(4)]
    for t in terms:
        t.flags.writeable = False           # writing one would raise
    buf = [None]
    add_into(buf, 0, Arr(terms[0]), None)
    assert buf[0]._data is terms[0]
    add_into(buf, 0, Arr(terms[1]), None)
    assert type(buf[0]) is Owned
    own = buf[0]._data
    add_into(buf, 0, Arr(terms[2]), None)
    add_into(buf, 0, tj.tensor(terms[3]), None)   # (a Tensor term, as a non-primitive node's)
    assert buf[0]._data is own
    np.testing.assert_array_equal(own, np.full((2, 3), 10.0))
    for k, t in enumerate(terms):
        np.testing.assert_array_equal(t, np.full((2, 3), float(k + 1)))
    # another dtype or shape: the general sum, as before
    add_into(buf, 0, Arr(np.ones((2, 3), np.float32)), lambda a, b: Arr(a._data + b._data))
    assert type(buf[0]) is Arr and buf[0]._data.dtype == np.float64


def test_weight_used_at_many_steps():
    """A weight used at 6 steps: its terms summed in one array that becomes .grad."""
    n = 64
    rng = np.random.default_rng(7)
    w = tj.tensor(rng.standard_normal((n, n)), requires_grad=True)
    xs = [rng.standard_normal((2, n)) for _ in range(6)]
    for step in range(3):
        loss = sum(((tj.tensor(x) @ w.T) ** 2).sum() for x in xs)
        loss.backward()
        wn = w.detach().numpy()
        want = (step + 1) * sum(2 * (x @ wn.T).T @ x for x in xs)
        np.testing.assert_allclose(w.grad.numpy(), want, rtol=1e-10)
    assert w.grad.numpy().flags.c_contiguous


def test_grad_accumulation_that_overflows_warns_nothing():
    """inf is a value: adding into an existing .grad warns no more than any eager op."""
    import warnings
    res = []
    for lib in (tj, torch):
        x = lib.tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
        (x * 3e38).sum().backward()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            (x * 3e38).sum().backward()         # 3e38 + 3e38 overflows float32
        res.append(x.grad.numpy() if lib is tj else x.grad.detach().numpy())
    np.testing.assert_array_equal(res[0], res[1])
    assert np.isinf(res[0]).all()


@pytest.mark.parametrize("shape", [(), (1,), (0, 3), (2, 3)])
def test_sums_of_every_size_and_layout(shape):
    """0-d terms (NumPy adds them to a scalar), empty ones, and transposed ones: the sum is
    an array of the leaf's shape, C-ordered, and right, over three steps."""
    rng = np.random.default_rng(8)
    a = rng.standard_normal(shape)
    x, xt = _pair(a)
    for _ in range(3):
        for lib, v in ((tj, x), (torch, xt)):
            y = v * 2.0
            z = (y * y).sum() + (y * 3.0).sum() + lib.exp(y).sum() + (v * v).sum()
            if len(shape) == 2:
                z = z + (v.T @ lib.ones((shape[0], 2), dtype=v.dtype)).sum()
            z.backward()
        _close(x.grad, xt.grad)
        assert type(x.grad.numpy()) is np.ndarray and x.grad.numpy().flags.c_contiguous


def test_transposed_weight_matmul_backward_copies_no_operand():
    """x @ w.T: both gradients are one GEMM each on NumPy's transposed views (BLAS transpose
    flags): the backward allocates w's gradient and its .grad, never a copy of w or w.T."""
    import tracemalloc
    n = 384
    rng = np.random.default_rng(9)
    w = tj.tensor(rng.standard_normal((n, n)), requires_grad=True)
    x = tj.tensor(rng.standard_normal((2, n)), requires_grad=True)
    for _ in range(2):                      # (the second time with the plans recorded)
        w.grad = x.grad = None
        loss = (x @ w.T).sum()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            loss.backward()
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    assert peak < 2.5 * n * n * 8, peak / (n * n * 8)
    np.testing.assert_allclose(w.grad.numpy(), np.ones((2, n)).T @ x.detach().numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), np.ones((2, n)) @ w.detach().numpy(),
                               rtol=1e-12)
