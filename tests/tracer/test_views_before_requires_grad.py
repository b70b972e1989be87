"""A view taken before `base.requires_grad_()`, against torch: it then requires grad (a view's
flag is its base's) yet has no history and is a leaf; ops on it record nodes whose edge for it
leads nowhere, so neither it nor its base gets a gradient through it; an in-place write to the
base reconnects it; the base's requires_grad_(False) takes the flag back."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

VIEWS = {   # name -> (the view of a (3, 4) base, whether torch's result is a view)
    "select": lambda x: x[0],
    "slice": lambda x: x[:, 1:3],
    "t": lambda x: x.t(),
    "T": lambda x: x.T,
    "view": lambda x: x.view(12),
    "reshape": lambda x: x.reshape(4, 3),
    "unsqueeze": lambda x: x.unsqueeze(0),
    "expand": lambda x: x.expand(2, 3, 4),
    "diagonal": lambda x: x.diagonal(),
    "unbind": lambda x: x.unbind(0)[1],
    "chunk": lambda x: x.chunk(2, 1)[1],
    "narrow": lambda x: x.narrow(1, 1, 2),
    "view of a view": lambda x: x.view(12)[2:7],
    "reshape copy": lambda x: x.t().reshape(12),
    "detach": lambda x: x.detach(),
    "data": lambda x: x.data,
}


def _base(lib):
    a = np.arange(12.0).reshape(3, 4)
    return torch.tensor(a) if lib is torch else tj.tensor(a)


def _state(lib, name, under_no_grad=False):
    """The view's standing: made before the base's requires_grad_(), or (under_no_grad) made
    under no_grad of a base that requires grad."""
    x = _base(lib)
    if under_no_grad:
        x.requires_grad_()
        with (torch.no_grad() if lib is torch else tj.no_grad()):
            v = VIEWS[name](x)
    else:
        v = VIEWS[name](x)
        x.requires_grad_()
    z = v * 2
    out = {"requires_grad": v.requires_grad, "is_leaf": v.is_leaf,
           "grad_fn": v.grad_fn is None, "z requires_grad": z.requires_grad}
    if z.requires_grad:
        out["edges"] = [n is None for n, _ in z.grad_fn.next_functions]
        (z.sum() + x.sum()).backward()
        out["x.grad"] = x.grad.tolist()
        out["v.grad"] = v.grad is None
    return out


@pytest.mark.parametrize("name", list(VIEWS), ids=str)
def test_view_made_before_requires_grad_is_torchs(name):
    assert _state(tj, name) == _state(torch, name)


def _errors(lib):
    x = _base(lib)
    v = x[0]
    w = x.t()
    x.requires_grad_()
    found = []
    for attempt in (lambda: v.backward(lib.ones_like(v)),
                    lambda: lib.autograd.grad((w * 3).sum(), w),
                    lambda: v.numpy(),
                    lambda: v.mul_(2)):
        try:
            attempt()
            found.append(None)
        except RuntimeError as e:
            found.append(str(e).split(" (at ")[0][:40])
    found.append(lib.autograd.grad((w * 3).sum() + x.sum(), [x, w], allow_unused=True)[1])
    return found


def test_its_errors_are_torchs():
    ours, theirs = _errors(tj), _errors(torch)
    assert [e is None for e in ours] == [e is None for e in theirs]
    assert ours[0] == theirs[0] == "element 0 of tensors does not require gr"
    assert "appears to not have been used in the graph" in _message(tj)


def _message(lib):
    x = _base(lib)
    w = x.t()
    x.requires_grad_()
    with pytest.raises(RuntimeError) as e:
        lib.autograd.grad((w * 3).sum(), w)
    return str(e.value)


@pytest.mark.parametrize("lib", [tj, torch], ids=["tracejit", "torch"])
def test_hooks_retain_grad_and_views_made_after(lib):
    x = _base(lib)
    v = x[0]
    x.requires_grad_()
    v.retain_grad()
    seen = []
    v.register_post_accumulate_grad_hook(lambda t: seen.append(t))
    u = v[1:]                       # made after: a node, whose edge leads nowhere
    assert u.requires_grad and u.grad_fn is not None
    assert u.grad_fn.name() == "SliceBackward0"
    assert u.grad_fn.next_functions[0][0] is None
    (u * 2).sum().backward()
    assert seen == [] and v.grad is None and x.grad is None


def _after_write(lib):
    x = _base(lib)
    v = x[0]
    x.requires_grad_()
    with (torch.no_grad() if lib is torch else tj.no_grad()):
        x.mul_(3)
    assert not v.is_leaf            # re-derived from the base, with its history
    (v * 2).sum().backward()
    return x.grad.tolist(), v.detach().tolist()


def _flags(lib):
    x = _base(lib)
    w = x.t()
    u = x[1]
    x.requires_grad_()
    x.requires_grad_(False)
    back = w.requires_grad
    x.requires_grad_()
    u.requires_grad_(False)         # torch: the base's flag still holds
    kept = u.requires_grad
    u.requires_grad_()              # its own flag: a leaf whose .grad fills
    (u * 2).sum().backward()
    return back, kept, u.grad.tolist(), x.grad


def test_a_write_to_the_base_reconnects_and_flags_follow_the_base():
    assert _after_write(tj) == _after_write(torch)
    assert _flags(tj) == _flags(torch)


def test_a_compiled_call_on_such_a_view():
    x = _base(tj)
    v = x[0]
    x.requires_grad_()
    f = tj.compile(lambda a: (a * 2).sum())
    y = f(v)
    assert y.requires_grad
    y.backward()
    assert v.grad is None and x.grad is None
    np.testing.assert_allclose(y.detach().numpy(), 2 * np.arange(4.0).sum())


@pytest.mark.parametrize("name", list(VIEWS), ids=str)
def test_view_made_under_no_grad_is_torchs(name):
    assert _state(tj, name, True) == _state(torch, name, True)


@pytest.mark.parametrize("lib", [tj, torch], ids=["tracejit", "torch"])
def test_no_grad_view_writes_in_no_grad_and_refuses_with_grad(lib):
    x = _base(lib).requires_grad_()
    no_grad = torch.no_grad if lib is torch else tj.no_grad
    with no_grad():
        v = x[0]
        v.mul_(2)                   # (an optimizer's step through a view)
    assert x.detach()[0].tolist() == [0.0, 2.0, 4.0, 6.0]
    with pytest.raises(RuntimeError):
        v.mul_(2)
