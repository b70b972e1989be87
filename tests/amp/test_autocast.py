"""tj.autocast against torch's CPU autocast: op dtypes, a small transformer-style block's loss
and gradients to bfloat16 tolerance, casts in the IR of a compiled function, the cache key."""
import threading

import numpy as np
import pytest
import torch

import tracejit as tj
import tracejit.nn as nn
import tracejit.nn.functional as F


def _t(a, requires_grad=False):
    return tj.tensor(np.asarray(a, np.float32), requires_grad=requires_grad)


def test_op_dtypes_follow_the_lists():
    x, w = tj.randn(4, 8), tj.randn(8, 3)
    lin = nn.Linear(8, 3)
    with tj.autocast("cpu"):
        assert (x @ w).dtype is tj.bfloat16
        assert tj.matmul(x, w).dtype is tj.bfloat16
        assert lin(x).dtype is tj.bfloat16                # bias cast too: no promotion back
        assert F.linear(x, w.T).dtype is tj.bfloat16
        assert tj.bmm(x.reshape(1, 4, 8), w.reshape(1, 8, 3)).dtype is tj.bfloat16
        h = x @ w
        assert h.softmax(-1).dtype is tj.float32
        assert tj.log_softmax(h, -1).dtype is tj.float32
        assert F.layer_norm(h, (3,)).dtype is tj.float32
        assert h.sum().dtype is tj.float32 and tj.exp(h).dtype is tj.float32
        assert tj.log(h.abs()).dtype is tj.float32 and (h ** 2).dtype is tj.float32
        assert tj.cumsum(h, 0).dtype is tj.float32
        assert F.cross_entropy(h, tj.tensor([0, 1, 2, 0])).dtype is tj.float32
        assert F.mse_loss(h, h).dtype is tj.float32
        assert tj.norm(h).dtype is tj.float32 and tj.linalg.vector_norm(h).dtype is tj.float32
        # other ops keep the operands' dtype; a composite is one op (gelu's inner pow stays bf16)
        assert tj.gelu(h, approximate="tanh").dtype is tj.bfloat16
        assert (h + 1).dtype is tj.bfloat16 and tj.relu(h).dtype is tj.bfloat16
        # float64 never autocasts; neither do integers
        x64 = tj.randn(4, 8, dtype=tj.float64)
        assert (x64 @ tj.randn(8, 2, dtype=tj.float64)).dtype is tj.float64
        assert tj.matmul(tj.ones(2, 2, dtype=tj.int64), tj.ones(2, 2, dtype=tj.int64)).dtype \
            is tj.int64
    assert (x @ w).dtype is tj.float32                     # off again after the block


def test_torch_agrees_on_the_dtypes():
    xt, wt = torch.randn(4, 8), torch.randn(8, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (xt @ wt).dtype is torch.bfloat16
        assert torch.nn.functional.linear(xt, wt.T, torch.zeros(3)).dtype is torch.bfloat16
        assert torch.nn.functional.cross_entropy(xt @ wt, torch.tensor([0, 1, 2, 0])).dtype \
            is torch.float32


def test_float16_values_and_cuda_autocast_leaves_cpu_tensors_alone():
    a, b = np.random.RandomState(0).randn(2, 5, 5).astype(np.float32)
    with tj.autocast("cpu", dtype=tj.float16):
        y = _t(a) @ _t(b)
    assert y.dtype is tj.float16
    ref = (a.astype(np.float16).astype(np.float32) @ b.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(y.float().numpy(), ref.astype(np.float16).astype(np.float32),
                               rtol=1e-3, atol=1e-3)
    with tj.autocast("cuda"):                  # only CUDA tensors autocast under it
        assert (_t(a) @ _t(b)).dtype is tj.float32
        assert tj.is_autocast_enabled() and tj.is_autocast_enabled("cuda")
        assert not tj.is_autocast_enabled("cpu")
    assert tj.get_autocast_dtype("cpu") is tj.bfloat16
    assert tj.get_autocast_dtype("cuda") is tj.float16


def test_nesting_enabled_false_decorator_and_threads():
    x = tj.randn(2, 2)
    with tj.autocast("cpu"):
        assert tj.is_autocast_enabled("cpu")
        with tj.autocast("cpu", enabled=False):
            assert (x @ x).dtype is tj.float32 and not tj.is_autocast_enabled("cpu")
        with tj.amp.autocast("cpu", dtype=tj.float16):
            assert (x @ x).dtype is tj.float16
        assert (x @ x).dtype is tj.bfloat16
        seen = []
        th = threading.Thread(target=lambda: seen.append((x @ x).dtype))
        th.start()
        th.join()
        assert seen == [tj.float32]               # thread-local, as grad mode
    assert not tj.is_autocast_enabled("cpu")

    @tj.autocast("cpu")
    def f(a):
        return a @ a
    assert f(x).dtype is tj.bfloat16 and (x @ x).dtype is tj.float32


def test_bad_arguments():
    with pytest.raises(RuntimeError, match="device_type"):
        tj.autocast("tpu")
    with pytest.warns(UserWarning, match="not supported"):
        ac = tj.autocast("cpu", dtype=tj.float64)
    with ac:
        assert not tj.is_autocast_enabled("cpu")


class _Block(nn.Module):
    """LayerNorm -> causal attention -> residual -> LayerNorm -> MLP (GELU) -> residual -> head."""

    def __init__(self, d=16, heads=2, vocab=11):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.head = nn.Linear(d, vocab)


def _forward(m, x, lib):
    Fn = torch.nn.functional if lib is torch else F
    B, T, C = x.shape
    h = m.ln1(x)
    q, k, v = m.qkv(h).split(C, dim=2)
    q, k, v = (t.reshape(B, T, m.heads, C // m.heads).transpose(1, 2) for t in (q, k, v))
    att = (q @ k.transpose(-2, -1)) * (1.0 / np.sqrt(C // m.heads))
    mask = np.tril(np.ones((T, T), bool))
    mask = torch.from_numpy(mask) if lib is torch else tj.tensor(mask)
    att = att.masked_fill(~mask, float("-inf"))
    att = Fn.softmax(att, dim=-1)
    y = (att @ v).transpose(1, 2).reshape(B, T, C)
    x = x + m.proj(y)
    x = x + m.out(Fn.gelu(m.fc(m.ln2(x))))
    return m.head(x)


# a torch module with the same attribute names, so _forward runs on both
class _TorchBlock(torch.nn.Module):
    def __init__(self, d=16, heads=2, vocab=11):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.fc, self.out = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)
        self.head = torch.nn.Linear(d, vocab)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def _pair(seed=0):
    tj.manual_seed(seed)
    m = _Block()
    tm = _TorchBlock()
    with torch.no_grad():
        tparams = dict(tm.named_parameters())
        for name, p in m.named_parameters():
            tparams[name].copy_(torch.from_numpy(p.detach().numpy().copy()))
    rs = np.random.RandomState(seed)
    x = rs.randn(2, 6, 16).astype(np.float32)
    y = rs.randint(0, 11, (2, 6))
    return m, tm, x, y


@pytest.mark.parametrize("compiled", [False, True])
def test_block_loss_and_grads_match_torch_autocast(compiled):
    m, tm, x, y = _pair()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tlogits = _forward(tm, torch.from_numpy(x), torch)
        tloss = torch.nn.functional.cross_entropy(tlogits.reshape(-1, 11),
                                                  torch.from_numpy(y).reshape(-1))
    tloss.backward()
    assert tlogits.dtype is torch.bfloat16 and tloss.dtype is torch.float32

    def loss_fn(xx, yy):
        with tj.autocast("cpu", dtype=tj.bfloat16):
            logits = _forward(m, xx, tj)
            return F.cross_entropy(logits.reshape(-1, 11), yy.reshape(-1)), logits
    fn = tj.compile(loss_fn) if compiled else loss_fn
    loss, logits = fn(tj.tensor(x), tj.tensor(y))
    loss.backward()
    assert logits.dtype is tj.bfloat16 and loss.dtype is tj.float32
    # bfloat16 keeps 8 bits: a few ulps of disagreement in the low-precision matmuls
    assert abs(loss.item() - tloss.item()) < 2e-2 * abs(tloss.item())
    assert _rel(logits.float().detach().numpy(), tlogits.float().detach().numpy()) < 2e-2
    tparams = dict(tm.named_parameters())
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.dtype is tj.float32, name
        assert _rel(p.grad.numpy(), tparams[name].grad.numpy()) < 5e-2, name


def test_compiled_ir_shows_the_casts_and_the_cache_keys_on_autocast():
    x, w = tj.randn(4, 8), tj.randn(8, 3)

    @tj.compile
    def f(a, b):
        return tj.softmax(a @ b, -1)

    plain = f(x, w)
    with tj.autocast("cpu"):
        mixed = f(x, w)
        text = str(f.lower(x, w).as_text())
    assert plain.dtype is tj.float32
    # the same function under autocast is a different graph: bf16 matmul, then f32 softmax
    assert "cast %a {dtype=bf16}" in text and "cast %b {dtype=bf16}" in text
    assert "matmul" in text and "bf16[4,3]" in text and "{dtype=f32}" in text
    with tj.autocast("cpu"):
        eager = tj.softmax(x @ w, -1)
    np.testing.assert_allclose(mixed.numpy(), eager.numpy(), rtol=1e-5, atol=1e-7)
    # back outside autocast: the float32 graph again, not the bf16 one just compiled
    np.testing.assert_array_equal(f(x, w).numpy(), plain.numpy())
    np.testing.assert_allclose(plain.numpy(), tj.softmax(x @ w, -1).numpy(), rtol=1e-5,
                               atol=1e-7)
    assert np.abs(mixed.numpy() - plain.numpy()).max() > 1e-4
    assert f.cache_info().misses == 2


def test_autocast_inside_a_compiled_function_and_its_gradient():
    x, w = tj.randn(4, 8), tj.randn(8, 3, requires_grad=True)

    def g(a, b):
        with tj.autocast("cpu"):
            return F.log_softmax(a @ b, -1).sum()
    eager = g(x, w)
    eager.backward()
    ge = w.grad.numpy().copy()
    w.grad = None
    cf = tj.compile(g)
    out = cf(x, w)
    out.backward()
    assert "bf16" in cf.lower(x, w).as_text()
    np.testing.assert_allclose(out.item(), eager.item(), rtol=1e-6)
    np.testing.assert_allclose(w.grad.numpy(), ge, rtol=1e-5, atol=1e-6)


def test_compiled_module_follows_the_autocast_state_of_each_call():
    m = nn.Linear(4, 3)
    cm = tj.compile(m)
    x = tj.randn(2, 4)
    assert cm(x).dtype is tj.float32
    with tj.autocast("cpu"):
        y = cm(x)
        assert y.dtype is tj.bfloat16
        np.testing.assert_allclose(y.float().detach().numpy(), m(x).float().detach().numpy(),
                                   rtol=1e-2, atol=1e-2)
    assert cm(x).dtype is tj.float32


def test_conv2d_runs_in_the_low_dtype_as_torch():
    rs = np.random.RandomState(0)
    x = rs.randn(2, 3, 8, 8).astype(np.float32)
    w = rs.randn(4, 3, 3, 3).astype(np.float32)
    b = rs.randn(4).astype(np.float32)
    wt = tj.tensor(w, requires_grad=True)
    with tj.autocast("cpu"):
        y = F.conv2d(_t(x), wt, _t(b), padding=1)
    tw = torch.tensor(w, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ty = torch.nn.functional.conv2d(torch.from_numpy(x), tw, torch.from_numpy(b), padding=1)
    assert y.dtype is tj.bfloat16 and ty.dtype is torch.bfloat16
    y.float().sum().backward()
    ty.float().sum().backward()
    assert _rel(y.float().detach().numpy(), ty.float().detach().numpy()) < 1e-2
    assert wt.grad.dtype is tj.float32
    assert _rel(wt.grad.numpy(), tw.grad.numpy()) < 1e-2
