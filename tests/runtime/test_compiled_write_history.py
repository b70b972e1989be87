"""A compiled function that writes a value requiring grad into a tensor that does not (an
argument, a global, a view of one, a tensor stored outside the trace) gives that tensor the
value's history, as the same eager code does in PyTorch: backward through it reaches the
inputs. Each case runs the same body through torch and through tj.compile (a first call and a
cached one) and compares values, `requires_grad` and the gradients of a loss that reads the
written tensors."""
import numpy as np
import pytest
import torch

import tracejit as tj

W = np.array([1.5, -0.25, 0.75])
X = np.array([0.5, -1.25, 2.0])


def _state(T, lib_tensor):
    """Fresh outside tensors for one run: a buffer, a 2-D base and a base for a view."""
    return {"buf": lib_tensor(np.zeros(3)), "base": lib_tensor(np.zeros((2, 3))),
            "glob": lib_tensor(np.ones(3))}


def _body(kind, T, s, w, x):
    """The same function for both libraries; `s` holds the outside tensors (captured by the
    compiled version as globals would be); returns the user's result."""
    if kind == "copy_into_capture":
        s["buf"].copy_(w * 2)
        return (s["buf"] * x).sum()
    if kind == "add_into_capture":
        s["glob"].add_(w * x)
        return x.sum()
    if kind == "setitem_into_capture":
        s["base"][0] = w.sin()
        return (w * 0).sum()
    if kind == "write_only":                 # no result depends on w: only the write does
        s["glob"].mul_(w)
        return x * 2
    if kind == "data_write":                 # through .data: no history (torch)
        s["glob"].data.add_(w)
        return (w * x).sum()
    if kind == "no_grad_write":              # under no_grad inside: no history
        with T.no_grad():
            s["glob"].add_(w)
        return (w * x).sum()
    if kind == "detach_write":               # through detach(): the root keeps no history
        s["glob"].detach().add_(w)
        return (w * x).sum()
    if kind == "two_writes":
        s["glob"].mul_(w)
        s["glob"].add_(x)
        s["buf"].copy_(s["glob"] * w)
        return (s["glob"] + s["buf"]).sum()
    raise AssertionError(kind)


KINDS = ["copy_into_capture", "add_into_capture", "setitem_into_capture", "write_only",
         "data_write", "no_grad_write", "detach_write", "two_writes"]


def _loss(s):
    """A loss reading every outside tensor that requires grad after the call."""
    parts = [(t * t).sum() for t in s.values() if t.requires_grad]
    return parts


def _run(lib, f, s):
    """f(w, x) with torch's or tracejit's w and x, then the loss over every outside tensor that
    requires grad afterwards: (out, outside values, their requires_grad flags, w.grad)."""
    w = lib.tensor(W, requires_grad=True)
    x = lib.tensor(X)
    out = f(w, x)
    flags = {k: t.requires_grad for k, t in s.items()}
    parts = _loss(s)
    total = sum(parts) if parts else None
    if out.requires_grad:
        total = out.sum() if total is None else total + out.sum()
    if total is not None:
        total.backward()
    return out.detach().numpy(), {k: t.detach().numpy() for k, t in s.items()}, flags, \
        None if w.grad is None else w.grad.numpy()


def _torch_run(kind):
    s = _state(torch, lambda a: torch.tensor(a))
    return _run(torch, lambda w, x: _body(kind, torch, s, w, x), s)


def _check(got, want):
    out, vals, flags, grad = got
    t_out, t_vals, t_flags, t_grad = want
    np.testing.assert_allclose(out, t_out, rtol=1e-12, atol=1e-12)
    for k in t_vals:
        np.testing.assert_allclose(vals[k], t_vals[k], rtol=1e-12, atol=1e-12, err_msg=k)
    assert flags == t_flags
    if t_grad is None:
        assert grad is None or not np.any(grad)
    else:
        assert grad is not None
        np.testing.assert_allclose(grad, t_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_write_keeps_history_like_torch(kind):
    want = _torch_run(kind)
    s = _state(tj, lambda a: tj.tensor(a))
    start = {k: t.numpy().copy() for k, t in s.items()}

    @tj.compile
    def f(w, x):
        return _body(kind, tj, s, w, x)

    for _ in range(3):              # the tracing call, then cached calls
        for k, t in s.items():      # (the same tensors, reset: new ones would not be seen)
            t.detach_()
            with tj.no_grad():
                t.copy_(tj.tensor(start[k]))
        _check(_run(tj, f, s), want)


def test_written_argument_takes_history():
    """An argument that does not require grad, written with w's value, then read by a loss."""
    def body(w, buf):
        buf.copy_(w.exp())
        return (w * 3).sum()

    tw, tb = torch.tensor(W, requires_grad=True), torch.zeros(3, dtype=torch.float64)
    (body(tw, tb) + (tb * tb).sum()).backward()
    f = tj.compile(body)
    for _ in range(2):
        w, buf = tj.tensor(W, requires_grad=True), tj.zeros(3, dtype=tj.float64)
        out = f(w, buf)
        assert buf.requires_grad
        (out + (buf * buf).sum()).backward()
        np.testing.assert_allclose(buf.detach().numpy(), tb.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-12)


def test_written_view_argument_gives_its_base_history():
    """A view argument written in place: its base takes the history too (torch's CopySlices)."""
    def body(w, v):
        v.copy_(w * w)
        return w.sum()

    tw, tbase = torch.tensor(W, requires_grad=True), torch.ones((2, 3), dtype=torch.float64)
    (body(tw, tbase[1]) + (tbase * torch.tensor(X)).sum()).backward()
    f = tj.compile(body)
    for _ in range(2):
        w, base = tj.tensor(W, requires_grad=True), tj.ones((2, 3), dtype=tj.float64)
        out = f(w, base[1])
        assert base.requires_grad
        (out + (base * tj.tensor(X)).sum()).backward()
        np.testing.assert_allclose(base.detach().numpy(), tbase.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-12)


def test_tensor_stored_outside_takes_history():
    """A tensor made in the trace and stored in outside state (it escapes the trace)."""
    box = {}

    def body(w):
        box["t"] = w * 3
        return w.sum()

    tw = torch.tensor(W, requires_grad=True)
    body(tw)
    (box["t"] * box["t"]).sum().backward()
    want = tw.grad.numpy().copy()
    f = tj.compile(body)
    for _ in range(3):
        w = tj.tensor(W, requires_grad=True)
        f(w)
        assert box["t"].requires_grad
        (box["t"] * box["t"]).sum().backward()
        np.testing.assert_allclose(w.grad.numpy(), want, rtol=1e-12)


def test_overwritten_capture_with_history_gets_zero_gradient():
    """A captured non-leaf that requires grad, overwritten by a constant (zero_, fill_): its
    old history gets a zero gradient (torch's ZeroBackward0), not the later reads' gradient."""
    for op in ("zero_", "fill_"):
        tw = torch.tensor(W, requires_grad=True)
        tg = tw * 2
        getattr(tg, op)(*(() if op == "zero_" else (3.0,)))
        ((tg + 1) * tg).sum().backward()
        w = tj.tensor(W, requires_grad=True)
        g = {"t": w * 2}

        @tj.compile
        def f(x):
            getattr(g["t"], op)(*(() if op == "zero_" else (3.0,)))
            return x + 1

        f(tj.tensor(X))
        assert g["t"].requires_grad
        ((g["t"] + 1) * g["t"]).sum().backward()
        np.testing.assert_allclose(g["t"].detach().numpy(), tg.detach().numpy())
        np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-12)


def test_call_under_no_grad_writes_no_history():
    g = tj.zeros(3, dtype=tj.float64)

    @tj.compile
    def f(w):
        g.copy_(w * 2)
        return w * 1

    w = tj.tensor(W, requires_grad=True)
    with tj.no_grad():
        f(w)
    assert not g.requires_grad
    np.testing.assert_allclose(g.numpy(), W * 2)
    f(w)
    assert g.requires_grad


def test_captured_leaf_written_with_history_is_refused():
    """A captured leaf that requires grad, written by a recorded op, raises as eagerly."""
    p = tj.zeros(3, dtype=tj.float64)

    @tj.compile
    def f(w):
        p.add_(w)
        return w * 1

    w = tj.tensor(W, requires_grad=True)
    f(w)                         # p does not require grad yet: it takes w's history
    assert p.requires_grad
    q = tj.zeros(3, dtype=tj.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        tj.compile(lambda w: q.add_(w) * 1)(w)


def test_write_with_history_after_backward_inside_is_refused():
    """A step that runs backward() inside has plain results: a capture written with a value
    that has a gradient path (torch: it would require grad) is refused, not left without it;
    the same write under no_grad, or of a detached value, is stored."""
    p = tj.tensor(np.array([1.0, 2.0]), requires_grad=True)
    ema = tj.zeros(2, dtype=tj.float64)

    def step(x, mode):
        loss = (p * x).sum()
        loss.backward()
        if mode == "plain":
            ema.copy_(p * 3)
        elif mode == "no_grad":
            with tj.no_grad():
                ema.copy_(p * 3)
        else:
            ema.copy_(p.detach() * 3)
        return loss

    x = tj.tensor(np.array([1.0, 1.0]))
    with pytest.raises(RuntimeError, match="runs backward.. inside wrote a value that requires "
                                           r"grad into the captured tensor f64\[2\]"):
        tj.compile(step, static_argnums=1)(x, "plain")
    assert not ema.requires_grad and not np.any(ema.numpy())
    for mode in ("no_grad", "detach"):
        p.grad = None
        tj.compile(step, static_argnums=1)(x, mode)
        assert not ema.requires_grad
        np.testing.assert_allclose(ema.numpy(), [3.0, 6.0])
        np.testing.assert_allclose(p.grad.numpy(), [1.0, 1.0])
