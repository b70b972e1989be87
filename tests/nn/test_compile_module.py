"""tj.compile(module) and whole training steps of tj.nn models compiled as one graph: the same
losses, parameters, gradients and optimizer state as the eager step and as torch."""
import numpy as np
import pytest

import tracejit as tj
from tracejit import nn
import tracejit.nn.functional as F

torch = pytest.importorskip("torch")


def _mlp(lib):
    return lib.nn.Sequential(lib.nn.Linear(4, 8), lib.nn.Tanh(), lib.nn.Linear(8, 3)).double()


def _models(n):
    tm = _mlp(torch)
    sd = {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}
    ms = []
    for _ in range(n):
        m = _mlp(tj)
        m.load_state_dict(sd)
        ms.append(m)
    return tm, ms


def _close(a, b, tol=1e-10):
    a = a.detach().numpy() if hasattr(a, "detach") else a
    b = b.detach().numpy() if hasattr(b, "detach") else b
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def _train_step(model, opt, nn_, F_, zero_first=False):
    def step(x, y):
        if zero_first:
            opt.zero_grad()
        loss = F_.cross_entropy(model(x), y)
        loss.backward()
        norm = nn_.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        if not zero_first:
            opt.zero_grad()
        return loss, norm
    return step


@pytest.mark.parametrize("zero_first", [False, True])
def test_whole_adamw_step_with_clipping_matches_eager_and_torch(zero_first):
    tm, (mc, me) = _models(2)
    kw = dict(lr=1e-2, weight_decay=0.1)
    oc, oe = tj.optim.AdamW(mc.parameters(), **kw), tj.optim.AdamW(me.parameters(), **kw)
    ot = torch.optim.AdamW(tm.parameters(), foreach=False, **kw)
    compiled = tj.compile(_train_step(mc, oc, nn, F, zero_first))
    eager = _train_step(me, oe, nn, F, zero_first)
    ref = _train_step(tm, ot, torch.nn, torch.nn.functional, zero_first)
    params = list(mc.parameters())
    rng = np.random.default_rng(1)
    for i in range(5):
        x, y = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)
        for o in (oc, oe, ot):
            o.param_groups[0]["lr"] = 1e-2 / (i + 1)           # a runtime input
        lc, nc = compiled(tj.tensor(x), tj.tensor(y))
        le, ne = eager(tj.tensor(x), tj.tensor(y))
        lt, nt = ref(torch.tensor(x), torch.tensor(y))
        for mine in ((lc, nc), (le, ne)):
            _close(mine[0], lt.item())
            _close(mine[1], nt.item())
        for pc, pe, pt in zip(mc.parameters(), me.parameters(), tm.parameters()):
            _close(pc, pt)
            _close(pc, pe, 1e-12)
            if zero_first:                    # the gradients stay, as eagerly
                _close(pc.grad, pt.grad)
                _close(pc.grad, pe.grad, 1e-12)
            else:
                assert pc.grad is None and pe.grad is None
            assert pc._version_count == pe._version_count
    assert list(mc.parameters()) == params              # the same Parameter objects
    for pc, pt in zip(mc.parameters(), tm.parameters()):
        sc, st = oc.state[pc], ot.state[pt]
        _close(sc["exp_avg"], st["exp_avg"])
        _close(sc["exp_avg_sq"], st["exp_avg_sq"])
        assert float(sc["step"].item()) == float(st["step"].item()) == 5
    # one trace, also with zero_grad first (it overwrites .grad unread: no guard on it)
    assert compiled.cache_info().misses == 1


def test_whole_sgd_momentum_step_matches_torch():
    tm, (mc,) = _models(1)
    kw = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    oc = tj.optim.SGD(mc.parameters(), **kw)
    ot = torch.optim.SGD(tm.parameters(), foreach=False, **kw)
    compiled = tj.compile(_train_step(mc, oc, nn, F))
    ref = _train_step(tm, ot, torch.nn, torch.nn.functional)
    rng = np.random.default_rng(2)
    for _ in range(5):
        x, y = rng.standard_normal((5, 4)), rng.integers(0, 3, 5)
        lc, _ = compiled(tj.tensor(x), tj.tensor(y))
        lt, _ = ref(torch.tensor(x), torch.tensor(y))
        _close(lc, lt.item())
    for pc, pt in zip(mc.parameters(), tm.parameters()):
        _close(pc, pt)
        _close(oc.state[pc]["momentum_buffer"], ot.state[pt]["momentum_buffer"])


def test_compiled_module_forward_and_backward_fill_grads():
    tm, (mc, me) = _models(2)
    cm = tj.compile(mc)
    x = np.random.default_rng(3).standard_normal((7, 4))
    yc, ye, yt = cm(tj.tensor(x)), me(tj.tensor(x)), tm(torch.tensor(x))
    _close(yc, yt)
    (yc ** 2).sum().backward()
    (ye ** 2).sum().backward()
    (yt ** 2).sum().backward()
    for pc, pe, pt in zip(mc.parameters(), me.parameters(), tm.parameters()):
        _close(pc.grad, pt.grad)
        _close(pc.grad, pe.grad, 1e-12)
    # parameters are read afresh: an in-place update is seen without retracing
    with tj.no_grad():
        mc[0].weight.mul_(0.5)
        me[0].weight.mul_(0.5)
    _close(cm(tj.tensor(x)), me(tj.tensor(x)), 1e-12)
    assert cm.cache_info().misses == 1


def test_compiled_module_delegates_to_the_module():
    m = _mlp(tj)
    cm = tj.compile(m)
    assert cm.module is m and cm._orig_mod is m and cm.__wrapped__ is m
    assert cm._modules is m._modules
    assert list(cm.parameters()) == list(m.parameters())
    assert list(cm.state_dict()) == list(m.state_dict())
    assert cm.training
    cm.eval()
    assert not m.training and not cm.training and not m[0].training
    cm.note = "hello"                                   # attributes are the module's
    assert m.note == "hello"
    assert "Linear(in_features=4" in repr(cm)
    with pytest.raises(AttributeError):
        cm.no_such_attribute


def test_compiled_module_traces_again_on_train_and_eval():
    m = nn.Sequential(nn.Linear(16, 16), nn.Dropout(0.5))
    cm = tj.compile(m)
    x = tj.randn(8, 16)
    assert (cm(x).detach().numpy() == 0).mean() > 0.2      # dropout active
    cm.eval()
    _close(cm(x), m[0](x), 1e-6)                          # the identity now
    misses = cm.cache_info().misses
    assert misses == 2
    _close(cm(x), m[0](x), 1e-6)
    assert cm.cache_info().misses == misses
    m.train()
    assert (cm(x).detach().numpy() == 0).mean() > 0.2
    m[1].training = False                                 # a flag set by hand counts too
    _close(cm(x), m[0](x), 1e-6)
    m.eval()
    _close(cm(x), m[0](x), 1e-6)
    m.train()
    assert (cm(x).detach().numpy() == 0).mean() > 0.2
    # each mode traced once: switching back reuses the earlier trace (train, eval, and the
    # hand-set mix)
    assert cm.cache_info().misses == 3


class _Scaled(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.lin = nn.Linear(3, 2).double()
        self.k = k

    @tj.compile
    def forward(self, x):
        y = self.lin(x) * self.k
        return y * 2 if self.training else y               # the module's own flag


def test_compile_as_a_method_decorator_and_on_bound_methods():
    a, b = _Scaled(1.0), _Scaled(3.0)
    x = tj.tensor(np.random.default_rng(4).standard_normal((4, 3)))
    ya = a(x)
    _close(ya, (a.lin(x) * 2).detach().numpy())
    _close(b(x), (b.lin(x) * 6).detach().numpy())          # each instance its own function
    a.eval()
    _close(a(x), a.lin(x).detach().numpy())                # the flag is part of the key
    a.train()
    (a(x) ** 2).sum().backward()                           # gradients reach the parameters
    w = a.lin.weight.detach().numpy()
    bias = a.lin.bias.detach().numpy()
    y = 2 * (x.numpy() @ w.T + bias)
    _close(a.lin.weight.grad, 2 * (2 * y).T @ x.numpy())
    assert type(a).forward.__get__(a) is type(a).forward.__get__(a)   # cached per instance
    f = tj.compile(b.lin.forward)                          # a bound method
    _close(f(x), b.lin(x).detach().numpy())
    b.lin.eval()
    f(x)
    assert f.cache_info().misses == 2


def test_state_created_inside_the_first_compiled_step_is_eager():
    _, (mc,) = _models(1)
    opt = tj.optim.Adam(mc.parameters(), lr=1e-3)
    step = tj.compile(_train_step(mc, opt, nn, F))
    step(tj.randn(3, 4, dtype=tj.float64), tj.tensor(np.array([0, 1, 2])))
    for p in mc.parameters():
        st = opt.state[p]
        assert not st["exp_avg"]._traced and st["exp_avg"].shape == p.shape
        assert np.abs(st["exp_avg"].numpy()).sum() > 0


def _cnn(lib):
    n = lib.nn
    return n.Sequential(n.Conv2d(2, 4, 3, padding=1), n.BatchNorm2d(4), n.ReLU(),
                        n.MaxPool2d(2), n.Flatten(), n.Linear(4 * 3 * 3, 3),
                        n.BatchNorm1d(3)).double()


def test_whole_step_of_a_cnn_with_batchnorm_matches_torch_then_eval():
    tm = _cnn(torch)
    m = _cnn(tj)
    m.load_state_dict({k: v.detach().numpy().copy() for k, v in tm.state_dict().items()})
    kw = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    opt = tj.optim.SGD(m.parameters(), **kw)
    topt = torch.optim.SGD(tm.parameters(), foreach=False, **kw)
    compiled = tj.compile(_train_step(m, opt, nn, F))
    ref = _train_step(tm, topt, torch.nn, torch.nn.functional)
    bufs = [b for _, b in m.named_buffers()]
    rng = np.random.default_rng(5)
    for _ in range(4):
        x, y = rng.standard_normal((5, 2, 6, 6)), rng.integers(0, 3, 5)
        lc, nc = compiled(tj.tensor(x), tj.tensor(y))
        lt, nt = ref(torch.tensor(x), torch.tensor(y))
        _close(lc, lt.item())
        _close(nc, nt.item())
    for (n, b), (tn, tb) in zip(m.named_buffers(), tm.named_buffers()):
        assert n == tn
        _close(b, tb)                           # running statistics and num_batches_tracked
    assert [b for _, b in m.named_buffers()] == bufs   # the same tensors, updated in place
    for p, tp in zip(m.parameters(), tm.parameters()):
        _close(p, tp)
    # SGD with momentum traces twice (its first step copies the gradient into the buffer)
    assert compiled.cache_info().misses == 2
    m.eval()
    tm.eval()
    cm = tj.compile(m)
    x = rng.standard_normal((2, 2, 6, 6))
    with tj.no_grad():
        _close(cm(tj.tensor(x)), tm(torch.tensor(x)))


def test_zero_grad_keeping_tensors_at_the_start_of_a_compiled_step():
    tm, (mc,) = _models(1)
    oc = tj.optim.SGD(mc.parameters(), lr=0.1, momentum=0.9)
    ot = torch.optim.SGD(tm.parameters(), lr=0.1, momentum=0.9, foreach=False)

    def make(model, opt, F_):
        def step(x, y):
            opt.zero_grad(set_to_none=False)      # zeroes the existing .grad in place
            loss = F_.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            return loss
        return step
    compiled, ref = tj.compile(make(mc, oc, F)), make(tm, ot, torch.nn.functional)
    rng = np.random.default_rng(6)
    grads = None
    for i in range(5):
        x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 3))
        _close(compiled(tj.tensor(x), tj.tensor(y)), ref(torch.tensor(x), torch.tensor(y)).item())
        for p, tp in zip(mc.parameters(), tm.parameters()):
            _close(p, tp)
            _close(p.grad, tp.grad)
        if i == 1:
            grads = [p.grad for p in mc.parameters()]
        if i > 1:                                 # the same .grad tensors, as eagerly
            assert all(p.grad is g for p, g in zip(mc.parameters(), grads))
    assert compiled.cache_info().misses == 2
