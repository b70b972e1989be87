"""PyTorch view semantics, eager and compiled, against torch: in-place ops on a view write
through to its base (with the base's autograd history and version counter), and in-place ops
on a base are seen by its live views; torch's errors for leaves, expanded and multi-output
views; chains of views, views of captures inside compiled functions, sizes 0 and 1."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

# each view op spelled the same way for torch and tracejit, on a (3, 4) base
VIEW_OPS = {
    "int": lambda y: y[1],
    "slice": lambda y: y[1:3],
    "slices": lambda y: y[:, 1:3],
    "step": lambda y: y[::2, 1::2],
    "none_ellipsis": lambda y: y[None, ..., 1],
    "select": lambda y: y.select(1, 2),
    "narrow": lambda y: y.narrow(1, 1, 2),
    "split": lambda y: y.split(2, dim=1)[1],
    "chunk": lambda y: y.chunk(2, 0)[0],
    "unbind": lambda y: y.unbind(1)[2],
    "view": lambda y: y.view(4, 3),
    "reshape": lambda y: y.reshape(2, 6),
    "flatten": lambda y: y.flatten(),
    "unflatten": lambda y: y.unflatten(1, (2, 2)),
    "squeeze": lambda y: y.unsqueeze(0).squeeze(0),
    "unsqueeze": lambda y: y.unsqueeze(1),
    "transpose": lambda y: y.transpose(0, 1),
    "permute": lambda y: y.permute(1, 0),
    "t": lambda y: y.t(),
    "T": lambda y: y.T,
    "mT": lambda y: y.mT,
    "movedim": lambda y: y.movedim(0, 1),
    "swapaxes": lambda y: y.swapaxes(0, 1),
    "diagonal": lambda y: y.diagonal(),
    "diagonal_offset": lambda y: y.diagonal(1),
    "detach": lambda y: y.detach(),
    "view_as": lambda y: y.view_as(y.reshape(4, 3)),
    "chain": lambda y: y[1:][:, 1:].t()[0],
    "chain_copy": lambda y: y.t()[1:3].reshape(-1),     # torch's reshape copies here
    "chain_reshape": lambda y: y[1:].reshape(8)[2:6],
    "tensor_split": lambda y: y.tensor_split(3, dim=1)[1],
    "hsplit": lambda y: y.hsplit(2)[1],
    "vsplit": lambda y: y.vsplit([1])[1],
    "ravel": lambda y: y.ravel(),
    "ravel_copy": lambda y: y.t().ravel(),
}
MULTI = {"split", "chunk", "unbind"}      # (torch's tensor_split pieces are plain views)
NAMES = sorted(VIEW_OPS)


def base(m):
    a = np.arange(12.0).reshape(3, 4) - 4.0
    return torch.tensor(a) if m is torch else tj.tensor(a)


def np_(t):
    return t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t.detach().numpy())


def write_through(m, name):
    y = base(m) * 1
    v = VIEW_OPS[name](y)
    v.mul_(3)
    v.add_(1)
    return y, v


def base_to_view(m, name):
    y = base(m) * 1
    v = VIEW_OPS[name](y)
    y.mul_(2)
    y[0, 1] = 100.0
    return y, v


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("direction", [write_through, base_to_view])
def test_eager_matches_torch(name, direction):
    want = direction(torch, name)
    got = direction(tj, name)
    for w, g in zip(want, got):
        np.testing.assert_array_equal(np_(g), np_(w))


COMPILED = ["int", "slices", "step", "none_ellipsis", "split", "unbind", "view", "flatten",
            "squeeze", "transpose", "T", "mT", "movedim", "diagonal", "detach", "view_as",
            "chain", "chain_copy", "chain_reshape"]


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("direction", [write_through, base_to_view])
def test_compiled_matches_torch(name, direction):
    want = direction(torch, name)

    @tj.compile
    def f(x):
        y = x.clone()
        v = VIEW_OPS[name](y)
        if direction is write_through:
            v.mul_(3)
            v.add_(1)
        else:
            y.mul_(2)
            y[0, 1] = 100.0
        return y, v
    got = f(base(tj))
    for w, g in zip(want, got):
        np.testing.assert_array_equal(np_(g), np_(w))


GRAD_OPS = [n for n in NAMES if n not in MULTI and n != "detach"]


def grads_write_through(m, name):
    x = base(m).requires_grad_(True)
    y = x * 2
    v = VIEW_OPS[name](y)
    v.mul_(3)
    v.exp_()
    loss = (y * y).sum() + (v * v).sum()
    loss.backward()
    return x.grad, loss


def grads_base_to_view(m, name):
    x = base(m).requires_grad_(True)
    y = x * 2
    v = VIEW_OPS[name](y)
    y.mul_(3)
    y.exp_()
    loss = (v * v * v).sum()
    loss.backward()
    return x.grad, loss


@pytest.mark.parametrize("name", GRAD_OPS)
@pytest.mark.parametrize("fn", [grads_write_through, grads_base_to_view])
def test_eager_gradients_match_torch(name, fn):
    want = fn(torch, name)
    got = fn(tj, name)
    for w, g in zip(want, got):
        np.testing.assert_allclose(np_(g), np_(w), rtol=1e-12)


@pytest.mark.parametrize("name", ["int", "slices", "transpose", "view", "diagonal", "chain"])
@pytest.mark.parametrize("fn", [grads_write_through, grads_base_to_view])
def test_compiled_gradients_match_torch(name, fn):
    want_g, want_l = fn(torch, name)

    def loss_fn(x):
        y = x * 2
        v = VIEW_OPS[name](y)
        if fn is grads_base_to_view:
            y.mul_(3)
            y.exp_()
            return (v * v * v).sum()
        v.mul_(3)
        v.exp_()
        return (y * y).sum() + (v * v).sum()
    loss, g = tj.value_and_grad(loss_fn)(base(tj))
    np.testing.assert_allclose(g.numpy(), np_(want_g), rtol=1e-12)
    np.testing.assert_allclose(loss.item(), want_l.item(), rtol=1e-12)


def test_write_through_gradient_central_differences():
    # d/dx of sum((x with x[1] *= x[1]) ** 2), vs float64 central differences
    def f(x):
        y = x * 1
        y[1].mul_(x[1])
        return (y ** 2).sum()
    a = np.random.default_rng(0).normal(size=(3, 2))
    assert tj.autograd.gradcheck(f, [tj.tensor(a, requires_grad=True)])
    assert f(tj.tensor(a)).item() == pytest.approx(f(torch.tensor(a)).item(), rel=1e-12)


def test_view_shares_version_counter_and_saved_views_notice():
    for m in (torch, tj):
        y = base(m) * 1
        v = y[1]
        ver = (lambda t: t._version) if m is torch else (lambda t: t._version_count)
        before = ver(v)
        y.add_(1)
        assert ver(v) == ver(y) == before + 1
        v.add_(1)
        assert ver(v) == ver(y) == before + 2
    x = base(tj).requires_grad_(True)
    y = x * 1
    v = y[1]
    z = v * v             # saves v
    y.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()
    x = base(tj).requires_grad_(True)
    y = x * 1
    z = y * y             # saves y
    y[1].add_(1)          # through a view
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()


def test_leaf_view_in_place_errors_and_no_grad_works():
    w = tj.zeros(3, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
        w[0].fill_(1.0)
    with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
        w.t()[1].add_(1.0)
    with tj.no_grad():
        w[0].fill_(5.0)
        w[:, :2].uniform_(-1, 1)
    assert np.all(w.detach().numpy()[0, 2:] == 5.0)
    assert np.all(np.abs(w.detach().numpy()[:, :2]) <= 1) and np.all(w.detach().numpy()[1:, 2:] == 0)
    assert w.is_leaf and w.requires_grad
    # detach() views write through without autograd seeing it, as torch
    w.detach()[2].fill_(7.0)
    assert np.all(w.detach().numpy()[2, 2:] == 7.0) and w.grad_fn is None


def test_nn_init_on_slices():
    lin = tj.nn.Linear(6, 4)
    with tj.no_grad():
        lin.weight[0].fill_(0)
        lin.weight[:, :3].normal_()
        lin.bias[1:].zero_()
    w = lin.weight.detach().numpy()
    assert np.all(w[0, 3:] == 0) and np.all(lin.bias.detach().numpy()[1:] == 0)
    assert np.all(w[:, :3] != 0)
    out = lin(tj.ones(2, 6))
    np.testing.assert_allclose(out.detach().numpy(), np.ones((2, 6)) @ w.T + lin.bias.detach().numpy(),
                               rtol=1e-6)


def test_expanded_view_in_place_errors():
    for m in (torch, tj):
        y = base(m)
        with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
            y[:1].expand(3, 4).add_(1)
    v = base(tj)[0].expand(2, 4)
    with pytest.raises(RuntimeError, match="more than one element"):
        v.fill_(0)


@pytest.mark.parametrize("name", sorted(MULTI))
def test_multi_output_views_refuse_in_place_with_grad(name):
    for m in (torch, tj):
        x = base(m).requires_grad_(True)
        y = x * 1
        with pytest.raises(RuntimeError, match="modified inplace"):
            VIEW_OPS[name](y).mul_(2)
    y = base(tj) * 1          # without autograd, they write through
    VIEW_OPS[name](y).mul_(0)
    ty = base(torch) * 1
    VIEW_OPS[name](ty).mul_(0)
    np.testing.assert_array_equal(y.numpy(), ty.numpy())


def test_view_made_in_no_grad_modified_with_grad_errors():
    for m in (torch, tj):
        x = base(m).requires_grad_(True)
        y = x * 1
        with m.no_grad():
            v = y[1]
        with pytest.raises(RuntimeError, match="created in no_grad mode"):
            v.mul_(2)


def test_view_strict_errors_and_reshape_copies():
    y = base(tj)
    with pytest.raises(RuntimeError, match=r"view size is not compatible.*Use \.reshape"):
        y.t().view(12)
    r = y.t().reshape(12)       # a copy, as torch's: not written through
    r.add_(1)
    np.testing.assert_array_equal(y.numpy(), base(tj).numpy())


def test_setitem_through_views_and_chains():
    for m in (torch, tj):
        y = base(m) * 1
        y[1:3][:, 2:4] = 7
        y.t()[0][1:] = -1
        y[0].unsqueeze(0)[0, ::3] = 9
        if m is torch:
            want = y.numpy()
        else:
            np.testing.assert_array_equal(y.numpy(), want)


@pytest.mark.parametrize("shape,key", [((0, 4), (slice(None), slice(1, 3))), ((1, 1), 0),
                                       ((1,), 0), ((2, 0), 1)])
def test_sizes_zero_and_one(shape, key):
    for m in (torch, tj):
        a = np.ones(shape)
        y = torch.tensor(a) if m is torch else tj.tensor(a)
        v = y[key]
        v.fill_(5)
        y.mul_(2)
        if m is torch:
            want = (y.numpy().copy(), v.numpy().copy())
        else:
            np.testing.assert_array_equal(y.numpy(), want[0])
            np.testing.assert_array_equal(v.numpy(), want[1])


def test_views_of_captures_in_compiled_functions():
    cache = tj.zeros(2, 5, 3)
    row = cache[0]                    # an outside view of the capture

    @tj.compile
    def step(k):
        for t in range(5):            # a KV-cache style loop
            cache[:, t] = k[:, t] * (t + 1)
        return row * 1
    k = tj.tensor(np.arange(30.0, dtype=np.float32).reshape(2, 5, 3))
    want = k.numpy() * np.arange(1, 6, dtype=np.float32)[None, :, None]
    for _ in range(2):                # traced, then cached
        got_row = step(k)
        np.testing.assert_array_equal(cache.numpy(), want)
        np.testing.assert_array_equal(got_row.numpy(), want[0])
        np.testing.assert_array_equal(row.numpy(), want[0])
        cache.zero_()
        np.testing.assert_array_equal(row.numpy(), 0 * want[0])


def test_in_place_on_outside_view_inside_compiled_function():
    y = tj.tensor(np.arange(6.0).reshape(2, 3))
    v = y[1]                          # both outside: v is a view of the capture y

    @tj.compile
    def f(a):
        v.add_(a)
        return y.sum()
    for i in range(2):
        s = f(tj.tensor(10.0, dtype=tj.float64))
        want = np.arange(6.0).reshape(2, 3)
        want[1] += 10.0 * (i + 1)
        np.testing.assert_array_equal(y.numpy(), want)
        np.testing.assert_array_equal(v.numpy(), want[1])
        assert s.item() == want.sum()


def test_compiled_view_of_clone_sees_base_update_and_detach_writes_through():
    @tj.compile
    def f(x):
        y = x.clone()
        v = y[1]
        y.mul_(2)
        z = y.detach()
        z.add_(1)
        return v, y
    x = np.arange(8.0).reshape(2, 4)
    v, y = f(tj.tensor(x))
    np.testing.assert_array_equal(v.numpy(), x[1] * 2 + 1)
    np.testing.assert_array_equal(y.numpy(), x * 2 + 1)


def test_fake_gpu_views_write_through(fake_gpu):
    y = tj.tensor(np.arange(12.0).reshape(3, 4), device="cuda")
    v = y.t()[1]
    v.mul_(3)
    want = np.arange(12.0).reshape(3, 4)
    want[:, 1] *= 3
    np.testing.assert_array_equal(y.cpu().numpy(), want)
    y.add_(1)
    np.testing.assert_array_equal(v.cpu().numpy(), want[:, 1] + 1)


def test_functional_spellings_are_views():
    for m in (torch, tj):
        y = base(m) * 1
        m.narrow(y, 1, 1, 2).mul_(0)
        m.transpose(y, 0, 1)[0].fill_(-3)
        m.select(y, 0, 2).add_(10)
        m.diagonal(y).add_(100)
        m.unflatten(y, 1, (2, 2))[:, 1, 0].fill_(8)
        m.reshape(y, (12,))[5:7].fill_(1)
        if m is torch:
            want = y.numpy()
        else:
            np.testing.assert_array_equal(y.numpy(), want)


@pytest.mark.parametrize("opt", ["SGD", "Adam"])
def test_optimizer_steps_reach_live_views(opt):
    out = []
    for m in (torch, tj):
        w = m.nn.Parameter(base(m).clone())
        d, row = w.diagonal(), w[1]
        o = getattr(m.optim, opt)([w], lr=0.1)
        (w * w).sum().backward()
        o.step()
        out.append((d.detach().numpy().copy(), row.detach().numpy().copy(),
                    w.detach().numpy().copy()))
    for w, g in zip(*out):
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_data_shares_storage_not_version_counter():
    for m in (torch, tj):
        x = base(m).requires_grad_(True)
        y = x * 1
        ver = (lambda t: t._version) if m is torch else (lambda t: t._version_count)
        before = ver(y)
        y.data[1].add_(5)           # a view of .data: data only, no autograd, no version
        y.data.mul_(2)
        assert ver(y) == before
        (y * 3).sum().backward()
        if m is torch:
            want = (y.detach().numpy().copy(), x.grad.numpy().copy())
        else:
            np.testing.assert_array_equal(y.detach().numpy(), want[0])
            np.testing.assert_array_equal(x.grad.numpy(), want[1])


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
@pytest.mark.parametrize("name", ["int", "slices", "transpose", "diagonal", "chain", "view"])
def test_real_gpu_views_eager_and_compiled(name):
    want = [write_through(torch, name), base_to_view(torch, name)]
    for direction, w in zip([write_through, base_to_view], want):
        y = tj.tensor(np.arange(12.0).reshape(3, 4) - 4.0, device="cuda") * 1
        v = VIEW_OPS[name](y)
        if direction is write_through:
            v.mul_(3)
            v.add_(1)
        else:
            y.mul_(2)
            y[0, 1] = 100.0
        for a, b in zip(w, (y, v)):
            np.testing.assert_array_equal(b.cpu().numpy(), np_(a))

    @tj.compile
    def f(x):
        y = x.clone()
        v = VIEW_OPS[name](y)
        v.mul_(3)
        v.add_(1)
        return y, v
    got = f(tj.tensor(np.arange(12.0).reshape(3, 4) - 4.0, device="cuda"))
    for a, b in zip(want[0], got):
        np.testing.assert_array_equal(b.cpu().numpy(), np_(a))


def test_contiguous_copies_only_non_contiguous_views():
    for m in (torch, tj):
        y = base(m) * 1
        a = y[1].contiguous()           # contiguous: y[1] itself, a view
        b = y.t().contiguous()          # a copy: not written through
        c = y.t().contiguous().view(12)
        a.add_(100)
        b.mul_(0)
        c.mul_(0)
        d = y.transpose(0, 1).contiguous().view(2, 6)    # nanoGPT's pattern
        if m is torch:
            want = (y.numpy().copy(), d.numpy().copy())
        else:
            np.testing.assert_array_equal(y.numpy(), want[0])
            np.testing.assert_array_equal(d.numpy(), want[1])


def test_views_inside_vmap_match_torch_func():
    def run(m, vmap):
        def g(x):
            y = x * 1
            v = y[0]
            y[1:].mul_(3)
            y.add_(1)
            return y + v.sum()
        a = np.arange(12.0).reshape(3, 4)
        return np_(vmap(g)(torch.tensor(a) if m is torch else tj.tensor(a)))
    np.testing.assert_array_equal(run(tj, tj.vmap), run(torch, torch.func.vmap))
