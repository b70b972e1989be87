"""View semantics leftovers, against torch 2.13: optimizer steps on gradients/parameters that
are views of one flat buffer (fast and written through), accumulation into a view .grad,
`.numpy()` of a view sharing its base's memory, view ops that change nothing returning a new
view object (y[:]), and tracer.inplace.store (the one helper for code writing arrays into a
tensor's storage)."""
import numpy as np
import pytest
import torch

import tracejit as tj
from tracejit.tracer.inplace import store
from tracejit.tracer.views import ViewOf


def _build(lib, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(6, 4), (6,), (3, 6), (3,)]
    return [lib.tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True)
            for s in shapes], rng


def _views_of_flat(lib, params, flat):
    """Each param's .grad becomes a view of `flat` (as DDP's gradient-as-bucket-view)."""
    off = 0
    for p in params:
        n = p.numel()
        p.grad = flat[off:off + n].view(p.shape)
        off += n


@pytest.mark.parametrize("transposed", [False, True])
def test_clip_and_adamw_on_view_grads_match_torch_without_positions(transposed):
    results = {}
    for lib in (torch, tj):
        params, rng = _build(lib)
        opt = lib.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
        n = sum(p.numel() for p in params)
        for step in range(3):
            flat = lib.tensor(rng.standard_normal(n).astype(np.float32))
            _views_of_flat(lib, params, flat)
            if transposed:          # a non-contiguous view gradient: (k, m) viewed, then .t()
                p = params[2]
                p.grad = flat[30:48].view(6, 3).t()
            lib.nn.utils.clip_grad_norm_(params, 0.5)
            opt.step()
            if lib is tj:
                # the write went straight into the flat buffer's memory: the root positions a
                # view reads (an arange of the whole buffer per gradient) were never needed
                assert all(type(p.grad._view) is ViewOf and p.grad._view.pos is None
                           for p in params)
            results.setdefault(lib.__name__, []).append(
                [flat.numpy().copy()] + [p.detach().numpy().copy() for p in params])
    for a_step, b_step in zip(results["torch"], results["tracejit"]):
        for a, b in zip(a_step, b_step):
            np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6)


def test_optimizer_step_writes_parameters_that_are_views_into_their_base():
    out = {}
    for lib in (torch, tj):
        flat = lib.zeros(10)
        p = flat[2:8].view(2, 3)
        p.requires_grad_()
        q = flat[8:]                # another view of the same buffer, not stepped
        opt = lib.optim.AdamW([p], lr=0.1)
        p.grad = lib.tensor(np.arange(6, dtype=np.float32).reshape(2, 3) - 2)
        opt.step()
        opt.step()
        out[lib.__name__] = (flat.numpy().copy(), q.numpy().copy())
    np.testing.assert_allclose(out["tracejit"][0], out["torch"][0], rtol=1e-6)
    np.testing.assert_array_equal(out["tracejit"][1], out["torch"][1])
    assert out["tracejit"][0][2:8].any()


def test_backward_accumulates_into_a_view_grad_in_place():
    out = {}
    for lib in (torch, tj):
        flat = lib.zeros(6)
        w = lib.ones(2, requires_grad=True)
        w.grad = flat[2:4].view(2)
        g = w.grad
        (w * 3).sum().backward()
        (w * lib.tensor([1.0, 2.0])).sum().backward()
        assert w.grad is g
        out[lib.__name__] = flat.numpy().copy(), g._version_count if lib is tj else g._version
    np.testing.assert_array_equal(out["tracejit"][0], out["torch"][0])
    assert out["tracejit"][1] == out["torch"][1] == 2


# -- .numpy() of views -----------------------------------------------------------------------
def _writes(lib):
    t = lib.arange(12.0)
    t[1:].numpy()[0] = 50
    t.view(3, 4).t().numpy()[1, 2] = 60          # element (2, 1) of the 3x4 view
    t[::3].numpy()[3] = 70
    t.view(3, 4)[1].numpy()[3] = 80
    t.view(3, 4).diagonal().numpy()[0] = 90
    t.view(3, 4).unsqueeze(0).squeeze(0).narrow(1, 1, 2).numpy()[2, 0] = 100
    t.detach()[4:6].numpy()[1] = 110
    x = lib.ones(4, requires_grad=True)
    x[1:].detach().numpy()[0] = 3
    return t.numpy().copy(), x.detach().numpy().copy()


def test_numpy_of_views_shares_the_base_memory_as_torch():
    a, b = _writes(torch), _writes(tj)
    np.testing.assert_array_equal(b[0], a[0])
    np.testing.assert_array_equal(b[1], a[1])


def test_numpy_of_views_is_writable_as_torch_and_refuses_grad():
    for lib in (torch, tj):
        t = lib.zeros(3)
        assert t[1:].numpy().flags.writeable
        assert t[:1].expand(4).numpy().flags.writeable
        x = lib.ones(3, requires_grad=True)
        with pytest.raises(RuntimeError, match="requires grad"):
            (x * 1)[1:].numpy()


def test_numpy_of_a_view_after_the_base_changed_and_views_follow_numpy_writes():
    t = tj.arange(6.0)
    v = t[2:]
    t.add_(1)                       # in place on the base: v follows
    a = v.numpy()
    a[:] = -1
    np.testing.assert_array_equal(t.numpy(), [1, 2, -1, -1, -1, -1])
    w = t[:3]
    t.numpy()[0] = 7                # the base's own array, written by the user
    assert w.tolist() == [7, 2, -1]


def test_numpy_of_a_view_whose_base_array_is_a_lazy_copy():
    src = tj.arange(6.0)
    base = tj.Tensor(src._data[:])  # a base whose array is not its own (read-only alias)
    base._data.flags.writeable = False
    v = base[1:4]
    v.numpy()[0] = 9
    assert base.tolist() == [0, 9, 2, 3, 4, 5]
    assert src.tolist() == [0, 1, 2, 3, 4, 5]   # the base took its own storage first
    v.mul_(2)
    assert base.tolist() == [0, 18, 4, 6, 4, 5]


# -- y[:] and other view ops that change nothing -------------------------------------------
@pytest.mark.parametrize("op", [
    lambda y: y[:], lambda y: y[...], lambda y: y[:, :], lambda y: y.view(y.shape),
    lambda y: y.reshape(2, 3), lambda y: y.squeeze(), lambda y: y.permute(0, 1),
    lambda y: y.flatten(0, 1).view(2, 3), lambda y: y.split(2)[0], lambda y: y.chunk(1)[0],
    lambda y: y.expand(2, 3), lambda y: y.narrow(0, 0, 2)])
def test_view_ops_that_change_nothing_give_new_views_sharing_version(op):
    for lib in (torch, tj):
        y = lib.arange(6.0).view(2, 3).clone()
        z = op(y)
        assert z is not y
        z.add_(1)
        assert z._version_count == y._version_count == 1 if lib is tj else \
            z._version == y._version == 1
        np.testing.assert_array_equal(y.numpy(), np.arange(6.0).reshape(2, 3) + 1)


def test_full_slice_has_torch_history_and_gradient():
    for lib in (torch, tj):
        x = lib.ones(3, requires_grad=True)
        y = x * 2
        z = y[:]
        assert z is not y
        assert z.grad_fn.name() == "SliceBackward0"
        (z * lib.tensor([1.0, 2.0, 3.0])).sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0, 6.0])
    s = tj.tensor(3.0)
    assert s[...] is not s and s[()] is not s
    for lib in (torch, tj):
        y = lib.ones(2, 3)
        assert y.flatten(1) is y            # torch's flatten(d, d) is its input itself


def test_full_slice_in_a_compiled_function():
    @tj.compile
    def f(y):
        z = y[:]
        z.mul_(2)
        return z + 0, y + 0

    a, b = f(tj.ones(3))
    np.testing.assert_array_equal(a.numpy(), [2, 2, 2])
    np.testing.assert_array_equal(b.numpy(), [2, 2, 2])


# -- tracer.inplace.store ------------------------------------------------------------------------
def test_store_into_a_view_writes_through_and_bumps_the_shared_version():
    base = tj.zeros(6)
    v, other = base[2:4], base[3:]
    e = base.detach()
    store(v, np.array([1.0, 2.0], np.float32))
    assert base.tolist() == [0, 0, 1, 2, 0, 0]
    assert other.tolist() == [2, 0, 0] and e.tolist() == base.tolist()
    assert base._version_count == v._version_count == 1


def test_store_into_a_base_makes_views_with_history_follow():
    base = tj.zeros(4)
    w = tj.ones(2, requires_grad=True)
    v = base[1:3]
    v.mul_(w)                       # v's array is now its own (it has autograd history)
    store(base, np.arange(4, dtype=np.float32))
    assert v.tolist() == [1, 2] and base._version_count == 2


def test_parameter_of_a_view_shares_the_base_storage():
    out = {}
    for lib in (torch, tj):
        flat = lib.zeros(8)
        p = lib.nn.Parameter(flat[2:8].view(2, 3))
        opt = lib.optim.SGD([p], lr=0.5)
        p.grad = lib.ones(2, 3)
        opt.step()
        with lib.no_grad():
            p.mul_(2)
        out[lib.__name__] = flat.numpy().copy()
    np.testing.assert_array_equal(out["tracejit"], out["torch"])


def _device_view_writes(device, optimizer=True):
    base = tj.tensor(np.arange(12.0, dtype=np.float32), device=device)
    v = base[2:8].view(2, 3)
    store(v, tj.tensor(np.full((2, 3), -1, np.float32), device=device)._data)
    grid = base.view(3, 4)
    grid.diagonal().mul_(10)
    p = tj.nn.Parameter(tj.zeros(4, device=device))
    flat = tj.tensor(np.arange(6, dtype=np.float32), device=device)
    p.grad = flat[1:5]
    tj.nn.utils.clip_grad_norm_([p], 1.0)
    if optimizer:                   # (a compiled update: not on the fake GPU)
        tj.optim.SGD([p], lr=1.0).step()
    return base.cpu().numpy(), flat.cpu().numpy(), p.detach().cpu().numpy()


def test_view_writes_on_a_fake_gpu_match_the_cpu(fake_gpu):
    want = _device_view_writes("cpu", optimizer=False)
    got = _device_view_writes("cuda", optimizer=False)
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, rtol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
def test_view_writes_on_the_gpu_match_the_cpu():
    want = _device_view_writes("cpu")
    got = _device_view_writes("cuda")
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, rtol=1e-6)
