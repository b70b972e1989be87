"""Eager composites as one fused op with one backward node (issue #14, tracer/fused.py):
values and gradients against torch in both tiers (interpreted, compiled), node names, one node
per call, double backward, in-place checks, retain_graph, errors, the fake GPU."""
import gc
import inspect

import numpy as np
import pytest

import tracejit as tj
import tracejit.nn.functional as F
from tracejit.tracer import autograd as _autograd
from tracejit.tracer import fused

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _w(shape, rng, dtype):
    return rng.standard_normal(shape).astype(dtype)


# (name, tracejit fn, torch fn, input shape, extra arrays: shape -> (tj, torch) built per dtype)
def _cases():
    tgt = np.array([1, 0, 3, 2, 0, 1])
    tgt_ign = np.array([1, -100, 3, 2, -100, 1])
    return [
        ("softmax", lambda x: F.softmax(x, -1), lambda x: TF.softmax(x, -1), (6, 5)),
        ("softmax_dim0", lambda x: F.softmax(x, 0), lambda x: TF.softmax(x, 0), (6, 5)),
        ("log_softmax", lambda x: F.log_softmax(x, -1), lambda x: TF.log_softmax(x, -1), (6, 5)),
        ("logsumexp", lambda x: tj.logsumexp(x, 1), lambda x: torch.logsumexp(x, 1), (6, 5)),
        ("layer_norm", lambda x: F.layer_norm(x, (5,)), lambda x: TF.layer_norm(x, (5,)), (6, 5)),
        ("gelu", F.gelu, TF.gelu, (6, 5)),
        ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"),
         lambda x: TF.gelu(x, approximate="tanh"), (6, 5)),
        ("sigmoid", tj.sigmoid, torch.sigmoid, (6, 5)),
        ("relu", tj.relu, torch.relu, (6, 5)),
        ("softplus", F.softplus, TF.softplus, (6, 5)),
        ("silu", F.silu, TF.silu, (6, 5)),
        ("elu", F.elu, TF.elu, (6, 5)),
        ("mish", F.mish, TF.mish, (6, 5)),
        ("leaky_relu", F.leaky_relu, TF.leaky_relu, (6, 5)),
        ("mean", lambda x: x.mean(), lambda x: x.mean(), (6, 5)),
        ("mean_dim", lambda x: x.mean(1), lambda x: x.mean(1), (6, 5)),
        ("var", lambda x: x.var(0), lambda x: x.var(0), (6, 5)),
        ("std", lambda x: x.std(1), lambda x: x.std(1), (6, 5)),
        ("cross_entropy", lambda x: F.cross_entropy(x, tj.tensor(tgt)),
         lambda x: TF.cross_entropy(x, torch.tensor(tgt)), (6, 5)),
        ("cross_entropy_ignore_smooth",
         lambda x: F.cross_entropy(x, tj.tensor(tgt_ign), label_smoothing=0.1),
         lambda x: TF.cross_entropy(x, torch.tensor(tgt_ign), label_smoothing=0.1), (6, 5)),
        ("cross_entropy_sum", lambda x: F.cross_entropy(x, tj.tensor(tgt), reduction="sum"),
         lambda x: TF.cross_entropy(x, torch.tensor(tgt), reduction="sum"), (6, 5)),
        ("nll_loss", lambda x: F.nll_loss(x, tj.tensor(tgt)),
         lambda x: TF.nll_loss(x, torch.tensor(tgt)), (6, 5)),
        ("mse_loss", lambda x: F.mse_loss(x, tj.tensor(np.ones((6, 5), x.dtype.np) * 0.5)),
         lambda x: TF.mse_loss(x, torch.ones((6, 5), dtype=x.dtype) * 0.5), (6, 5)),
    ]


CASES = _cases()


def _compare(f, tf, xv, gv, rtol):
    x = tj.tensor(xv, requires_grad=True)
    tx = torch.tensor(xv, requires_grad=True)
    y, ty = f(x), tf(tx)
    g = gv(ty.shape)
    y.backward(tj.tensor(g))
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=rtol, atol=rtol)
    return y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_torch_forward_and_backward(case, dtype, tier):
    name, f, tf, shape = case
    rng = np.random.default_rng(0)
    rtol = 2e-5 if dtype == np.float32 else 1e-10
    xv = _w(shape, rng, dtype)
    for _ in range(3):          # the same signature again: the plan's cached graphs
        y = _compare(f, tf, xv, lambda s: _w(s, rng, dtype), rtol)
    assert isinstance(y.grad_fn, fused.FusedNode)


_SIZE_OPS = [
    ("softmax", lambda x: F.softmax(x, -1), lambda x: TF.softmax(x, -1)),
    ("log_softmax", lambda x: F.log_softmax(x, -1), lambda x: TF.log_softmax(x, -1)),
    ("layer_norm", lambda x: F.layer_norm(x, x.shape[-1:]),
     lambda x: TF.layer_norm(x, x.shape[-1:])),
    ("gelu", F.gelu, TF.gelu),
    ("sigmoid", tj.sigmoid, torch.sigmoid),
]
_SIZES = [(op, shape) for op in _SIZE_OPS for shape in [(0, 4), (3, 0), (1, 1), (1,), ()]
          if shape != () or op[0] in ("gelu", "sigmoid")]    # (the others need a dim)


@pytest.mark.parametrize("op,shape", _SIZES, ids=[f"{o[0]}-{s}" for o, s in _SIZES])
def test_sizes_zero_and_one(op, shape, tier):
    name, f, tf = op
    rng = np.random.default_rng(1)
    xv = _w(shape, rng, np.float64)
    for _ in range(2):
        _compare(f, tf, xv, lambda s: _w(s, rng, np.float64), 1e-10)


@pytest.mark.parametrize("case", CASES[:8], ids=[c[0] for c in CASES[:8]])
def test_non_contiguous_input(case, tier):
    name, f, tf, shape = case
    rng = np.random.default_rng(2)
    base = _w((shape[1], shape[0]), rng, np.float64)
    xv = base.T                    # a transposed view: strides not C-ordered
    assert not xv.flags.c_contiguous
    for _ in range(2):
        _compare(f, tf, xv, lambda s: _w(s, rng, np.float64), 1e-10)


def test_layer_norm_weight_bias_grads_match_torch(tier):
    rng = np.random.default_rng(3)
    xv, wv, bv = _w((4, 3, 8), rng, np.float32), _w(8, rng, np.float32), _w(8, rng, np.float32)
    for _ in range(3):
        x, w, b = (tj.tensor(v, requires_grad=True) for v in (xv, wv, bv))
        tx, tw, tb = (torch.tensor(v, requires_grad=True) for v in (xv, wv, bv))
        y = F.layer_norm(x, (8,), w, b)
        ty = TF.layer_norm(tx, (8,), tw, tb)
        assert y.grad_fn.name() == ty.grad_fn.name() == "NativeLayerNormBackward0"
        (y * y).sum().backward()
        (ty * ty).sum().backward()
        for a, ta in ((x, tx), (w, tw), (b, tb)):
            np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_node_names_are_torchs(case):
    name, f, tf, shape = case
    xv = np.random.default_rng(4).standard_normal(shape)
    y = f(tj.tensor(xv, requires_grad=True))
    ty = tf(torch.tensor(xv, requires_grad=True))
    assert y.grad_fn.name() == ty.grad_fn.name()


def _nodes_alive() -> int:
    gc.collect()
    return sum(issubclass(type(o), _autograd.Node) and type(o) is not _autograd.AccumulateGrad
               for o in gc.get_objects())


@pytest.mark.parametrize("op", [lambda x: F.softmax(x, -1), lambda x: F.layer_norm(x, (16,)),
                                F.gelu, lambda x: F.cross_entropy(x, tj.tensor([1, 2, 3, 4]))])
def test_one_node_per_call(op, tier):
    """The call records one node and nothing inside it (no graph of primitive nodes)."""
    x = tj.tensor(np.random.default_rng(5).standard_normal((4, 16)), requires_grad=True)
    op(x)                      # the plan is made (and the leaf's AccumulateGrad)
    x.sum().backward()
    before = _nodes_alive()
    y = op(x)
    assert _nodes_alive() - before == 1
    assert y.grad_fn.next_functions[0][0].name() == "AccumulateGrad"


@pytest.mark.parametrize("name,f,tf", [
    ("softmax", lambda x: F.softmax(x, -1), lambda x: TF.softmax(x, -1)),
    ("layer_norm", lambda x: F.layer_norm(x, (5,)), lambda x: TF.layer_norm(x, (5,))),
    ("gelu", F.gelu, TF.gelu),
    ("log_softmax", lambda x: F.log_softmax(x, -1), lambda x: TF.log_softmax(x, -1)),
    ("cross_entropy", lambda x: F.cross_entropy(x, tj.tensor([0, 1, 4])),
     lambda x: TF.cross_entropy(x, torch.tensor([0, 1, 4]))),
])
def test_double_backward_matches_torch(name, f, tf, tier):
    xv = np.random.default_rng(6).standard_normal((3, 5))
    for _ in range(2):
        x = tj.tensor(xv, requires_grad=True)
        tx = torch.tensor(xv, requires_grad=True)
        (g,) = tj.autograd.grad((f(x) ** 2).sum(), x, create_graph=True)
        (tg,) = torch.autograd.grad((tf(tx) ** 2).sum(), tx, create_graph=True)
        (g * g).sum().backward()
        (tg * tg).sum().backward()
        np.testing.assert_allclose(g.detach().numpy(), tg.detach().numpy(), rtol=1e-9,
                                   atol=1e-12)
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("op", ["layer_norm_weight", "gelu"])
def test_inplace_change_of_a_saved_input_is_detected(op, tier):
    """layer_norm's input gradient reads its weight, gelu's its input (as torch's): changed in
    place after the call, backward raises, in both tiers (saved inputs are not copied)."""
    rng = np.random.default_rng(12)
    xv, wv = rng.standard_normal((3, 4)), rng.standard_normal(4)
    for _ in range(2):
        x = tj.tensor(xv, requires_grad=True)
        w = tj.tensor(wv)
        if op == "gelu":
            h = x * 1.0
            y = F.gelu(h)
            h.mul_(3.0)
        else:
            y = F.layer_norm(x, (4,), w)
            w.mul_(3.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.pow(2).sum().backward()


@pytest.mark.parametrize("name", ["softmax", "sigmoid", "relu"])
def test_inplace_change_of_an_unread_input_is_fine(name, tier):
    """torch's nodes of these keep their results, not their input: changing the input in
    place after the call is legal, and the gradient is the one at the values the call read
    (sigmoid's fused node keeps its own copy of the input its backward reads)."""
    f, tf = {"softmax": (lambda a: F.softmax(a, -1), lambda a: TF.softmax(a, -1)),
             "sigmoid": (tj.sigmoid, torch.sigmoid), "relu": (tj.relu, torch.relu)}[name]
    xv = np.random.default_rng(7).standard_normal((3, 4))
    for _ in range(3):
        x = tj.tensor(xv, requires_grad=True)
        h = x * 1.0
        y = f(h)
        h.mul_(3.0)
        y.backward(tj.tensor(np.arange(12.0).reshape(3, 4)))
        tx = torch.tensor(xv, requires_grad=True)
        tf(tx * 1.0).backward(torch.arange(12.0, dtype=torch.float64).reshape(3, 4))
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)


def test_hooks_retain_grad_and_retain_graph(tier):
    xv = np.random.default_rng(8).standard_normal((3, 4))
    for _ in range(2):
        x = tj.tensor(xv, requires_grad=True)
        y = F.softmax(x, -1)
        y.retain_grad()
        seen = []
        y.register_hook(lambda g: seen.append(g.numpy().copy()) or g * 2)
        (y * y).sum().backward(retain_graph=True)
        first = x.grad.numpy().copy()
        np.testing.assert_allclose(seen[0], 2 * y.detach().numpy(), rtol=1e-12)
        (y * y).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), 2 * first, rtol=1e-12)
        tx = torch.tensor(xv, requires_grad=True)
        ty = TF.softmax(tx, -1)
        ty.retain_grad()
        ty.register_hook(lambda g: g * 2)
        (ty * ty).sum().backward()
        np.testing.assert_allclose(first, tx.grad.numpy(), rtol=1e-12)
        # (torch's retain_grad sees the gradient after the tensor's hooks)
        np.testing.assert_allclose(y.grad.numpy(), 2 * ty.grad.numpy(), rtol=1e-12)
        with pytest.raises(RuntimeError, match="retain_graph=True"):
            (y * y).sum().backward()


def _ce(x, t):
    return F.cross_entropy(x, t)


def test_cross_entropy_target_out_of_bounds_raises(tier):
    x = tj.tensor(np.zeros((3, 4)), requires_grad=True)
    _ce(x, tj.tensor([0, 1, 2]))                      # the plan is traced from _ce's line
    line = inspect.currentframe().f_lineno + 2        # the error names the failing call's line
    with pytest.raises(IndexError, match=f"out of bounds .*test_fused_composites.py:{line}"):
        F.cross_entropy(x, tj.tensor([0, 7, 2]))
    with pytest.raises(IndexError, match="out of bounds"):
        F.cross_entropy(x, tj.tensor([0, -3, 2]))


def test_shape_errors_name_the_op():
    x = tj.tensor(np.zeros((3, 4)), requires_grad=True)
    with pytest.raises(ValueError, match=r"layer_norm.*normalized_shape"):
        F.layer_norm(x, (5,))
    with pytest.raises(ValueError, match="test_fused_composites.py"):
        F.layer_norm(x, (5,))


def test_autocast_keeps_float32():
    x = tj.tensor(np.random.default_rng(9).standard_normal((4, 8)).astype(np.float32),
                  requires_grad=True)
    with tj.autocast("cpu", dtype=tj.bfloat16):
        y = F.softmax(x.to(tj.bfloat16), -1)
    assert y.dtype == tj.float32                      # softmax runs in float32 (as torch)
    y.sum().backward()
    assert x.grad.dtype == tj.float32


def test_no_grad_and_eval_paths_record_nothing():
    x = tj.tensor(np.ones((2, 3)), requires_grad=True)
    with tj.no_grad():
        y = F.softmax(x, -1)
    assert y.grad_fn is None and not y.requires_grad


def test_fake_gpu_backward_makes_no_host_sync(fake_gpu):
    import fakecupy
    fused.clear()
    rng = np.random.default_rng(10)
    xv, wv = rng.standard_normal((4, 6)), rng.standard_normal(6)
    for _ in range(2):
        x = tj.tensor(xv, requires_grad=True, device="cuda")
        w = tj.tensor(wv, requires_grad=True, device="cuda")
        # (not gelu: without cupyx, float64 erf on the fake device is float32-accurate)
        y = F.silu(F.layer_norm(F.softmax(x, -1), (6,), w))
        assert y.grad_fn.name() == "SiluBackward0" and y.device == "cuda"
        before = dict(fakecupy.COUNTS)
        gx, gw = tj.autograd.grad(y.sum(), (x, w))
        assert fakecupy.COUNTS["to_host"] == before["to_host"]
        assert fakecupy.COUNTS["to_device"] == before["to_device"]
    tx = torch.tensor(xv, requires_grad=True)
    tw = torch.tensor(wv, requires_grad=True)
    TF.silu(TF.layer_norm(TF.softmax(tx, -1), (6,), tw)).sum().backward()
    np.testing.assert_allclose(gx.cpu().numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gw.cpu().numpy(), tw.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_real_gpu_fused_composites_match_torch_cpu(dtype):
    rng = np.random.default_rng(11)
    xv, wv = rng.standard_normal((64, 48)).astype(dtype), rng.standard_normal(48).astype(dtype)
    tgt = rng.integers(0, 48, 64)
    for _ in range(3):
        x = tj.tensor(xv, requires_grad=True, device="cuda")
        w = tj.tensor(wv, requires_grad=True, device="cuda")
        loss = F.cross_entropy(F.gelu(F.layer_norm(x, (48,), w)), tj.tensor(tgt, device="cuda"))
        loss.backward()
    tx, tw = torch.tensor(xv, requires_grad=True), torch.tensor(wv, requires_grad=True)
    TF.cross_entropy(TF.gelu(TF.layer_norm(tx, (48,), tw)), torch.tensor(tgt)).backward()
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(x.grad.cpu().numpy(), tx.grad.numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(w.grad.cpu().numpy(), tw.grad.numpy(), rtol=rtol, atol=rtol)


def _sdpa_masks(rng):
    allowed = np.tril(np.ones((5, 5), bool))
    allowed[2] = False                   # a row with every position masked: 0 (as torch)
    additive = rng.standard_normal((5, 5))
    return [({"is_causal": True}, {"is_causal": True}),
            ({"attn_mask": tj.tensor(allowed)}, {"attn_mask": torch.tensor(allowed)}),
            ({"attn_mask": tj.tensor(additive)}, {"attn_mask": torch.tensor(additive)}),
            ({}, {}), ({"scale": 0.3}, {"scale": 0.3})]


@pytest.mark.parametrize("k", range(5))
def test_attention_is_one_node_matching_torch(k, tier):
    rng = np.random.default_rng(13)
    q, kk, v = (rng.standard_normal((2, 3, 5, 4)) for _ in range(3))
    kw, tkw = _sdpa_masks(rng)[k]
    for _ in range(2):
        a = [tj.tensor(t, requires_grad=True) for t in (q, kk, v)]
        b = [torch.tensor(t, requires_grad=True) for t in (q, kk, v)]
        y = F.scaled_dot_product_attention(*a, **kw)
        ty = TF.scaled_dot_product_attention(*b, **tkw)
        assert y.grad_fn.name() == ty.grad_fn.name()
        assert isinstance(y.grad_fn, fused.FusedNode)
        (y * y).sum().backward()
        (ty * ty).sum().backward()
        np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-10,
                                   atol=1e-12)
        for t, tt in zip(a, b):
            np.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_attention_with_dropout_records_op_by_op():
    """Dropout draws random numbers: that call is not fused, and its gradient still uses the
    mask it drew (checked against the mask read back from a p=0.5 dropout of ones)."""
    tj.manual_seed(0)
    q = tj.tensor(np.ones((1, 4, 3)), requires_grad=True)
    v = tj.tensor(np.eye(4)[None].repeat(1, 0), requires_grad=True)
    y = F.scaled_dot_product_attention(q, q, v, dropout_p=0.5)
    assert not isinstance(y.grad_fn, fused.FusedNode)
    y.sum().backward()
    # uniform attention 1/4 per key; kept entries scaled by 2, so y = 0.5 * mask
    mask = y.detach().numpy() * 2.0
    assert set(np.unique(mask)) <= {0.0, 1.0}
    # y = A v with v = I, so dL/dv[j, c] = sum_i A[i, j] = sum_i y[i, j] for every c
    want = np.repeat(y.detach().numpy()[0].sum(0)[:, None], 4, 1)
    np.testing.assert_allclose(v.grad.numpy()[0], want, rtol=1e-12)


@pytest.mark.parametrize("xshape", [(5, 4), (2, 3, 4), (0, 4), (1, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_is_one_node_matching_torch(xshape, bias, tier):
    rng = np.random.default_rng(14)
    xv, wv, bv = rng.standard_normal(xshape), rng.standard_normal((6, 4)), rng.standard_normal(6)
    for _ in range(3):
        x, w, b = (tj.tensor(v, requires_grad=True) for v in (xv, wv, bv))
        tx, tw, tb = (torch.tensor(v, requires_grad=True) for v in (xv, wv, bv))
        y = F.linear(x, w, b if bias else None)
        ty = TF.linear(tx, tw, tb if bias else None)
        assert y.grad_fn.name() == ty.grad_fn.name()
        (y * y).sum().backward()
        (ty * ty).sum().backward()
        np.testing.assert_allclose(y.detach().numpy(), ty.detach().numpy(), rtol=1e-10)
        for a, ta in ((x, tx), (w, tw)) + (((b, tb),) if bias else ()):
            np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_fake_gpu_attention_constants_are_made_once(fake_gpu):
    """The causal mask is an array constant of the plan: copied to the device on the first
    call only, so later calls (forward and backward) make the host wait for nothing."""
    import fakecupy
    fused.clear()
    rng = np.random.default_rng(15)
    qv = rng.standard_normal((2, 5, 4))
    for i in range(3):
        q = tj.tensor(qv, requires_grad=True, device="cuda")
        before = dict(fakecupy.COUNTS)
        y = F.scaled_dot_product_attention(q, q, q, is_causal=True)
        (gq,) = tj.autograd.grad(y.sum(), q)
        if i:
            assert fakecupy.COUNTS["to_device"] == before["to_device"]
            assert fakecupy.COUNTS["to_host"] == before["to_host"]
    tq = torch.tensor(qv, requires_grad=True)
    TF.scaled_dot_product_attention(tq, tq, tq, is_causal=True).sum().backward()
    np.testing.assert_allclose(gq.cpu().numpy(), tq.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_gradients_follow_the_inputs_as_they_were_at_the_call(tier):
    """requires_grad changed between the call and backward: each gradient still goes to its
    own input (the backward graph's outputs are in the call's order)."""
    rng = np.random.default_rng(16)
    xv, wv, bv = rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal(4)
    tx, tw, tb = (torch.tensor(v, requires_grad=True) for v in (xv, wv, bv))
    TF.layer_norm(tx, (4,), tw, tb).pow(3).sum().backward()
    for _ in range(2):
        x, w, b = (tj.tensor(v, requires_grad=True) for v in (xv, wv, bv))
        y = F.layer_norm(x, (4,), w, b)
        x.requires_grad_(False)
        y.pow(3).sum().backward()
        np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-10)
