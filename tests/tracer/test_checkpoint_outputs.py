"""checkpoint(fn, ...) of an fn returning several tensors (and values that are not tensors),
as torch's use_reentrant=False: the same outputs and the same gradients for the arguments and
the closure's parameters, whichever outputs the loss uses; eager and compiled."""
import numpy as np
import pytest
import torch

import tracejit as tj


def _run(lib, x0, w0, use, compiled=False):
    w = lib.tensor(w0, requires_grad=True)
    x = lib.tensor(x0, requires_grad=True)
    idx = lib.tensor([1, 0])

    def block(h, scale, *, bias):
        y = lib.tanh(h @ w) * scale + bias
        z = (h * h).sum(-1)
        return y, {"z": z, "order": idx.flip(0), "h": h}, [z.argmax(), None, "tag"], scale

    def loss_fn(x):
        y, d, rest, scale = lib.utils.checkpoint.checkpoint(block, x, 2.0, bias=0.5,
                                                            use_reentrant=False)
        parts = {"y": (y * y).sum(), "z": d["z"].sum() * 3.0, "h": d["h"].sum()}
        assert rest[1] is None and rest[2] == "tag" and scale == 2.0
        assert d["h"] is x and not d["order"].requires_grad and not rest[0].requires_grad
        if not compiled:
            assert d["order"].tolist() == [0, 1]
        return sum(parts[k] for k in use)

    f = tj.compile(loss_fn) if compiled else loss_fn
    loss = f(x)
    loss.backward()
    return float(loss.detach()), x.grad.numpy().copy(), None if w.grad is None else w.grad.numpy().copy()


@pytest.mark.parametrize("use", [("y", "z"), ("z",), ("y", "h")], ids=["both", "second", "arg"])
def test_checkpoint_several_outputs_like_torch(use):
    rng = np.random.default_rng(1)
    x0, w0 = rng.standard_normal((3, 4)), rng.standard_normal((4, 4))
    want = _run(torch, x0, w0, use)
    got = _run(tj, x0, w0, use)
    assert got[0] == pytest.approx(want[0], rel=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-12)
    if want[2] is None:         # w unused by the loss: torch leaves its grad None
        assert got[2] is None or not got[2].any()
    else:
        np.testing.assert_allclose(got[2], want[2], rtol=1e-10, atol=1e-12)


def test_checkpoint_several_outputs_compiled():
    rng = np.random.default_rng(2)
    x0, w0 = rng.standard_normal((3, 4)), rng.standard_normal((4, 4))
    want = _run(torch, x0, w0, ("y", "z"))
    got = _run(tj, x0, w0, ("y", "z"), compiled=True)
    assert got[0] == pytest.approx(want[0], rel=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-10, atol=1e-12)


def test_checkpoint_hf_style_layer_tuple():
    """A layer returning (hidden, attention weights) as HF's do, both used by the loss."""
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal((2, 5, 8))
    res = []
    for lib in (torch, tj):
        lib.manual_seed(0)
        att = lib.nn.MultiheadAttention(8, 2, batch_first=True).double()
        if lib is torch:
            state = {k: v.detach().numpy().copy() for k, v in att.state_dict().items()}
        else:
            att.load_state_dict(state)

        def layer(h):
            out, weights = att(h, h, h)
            return out + h, weights

        x = lib.tensor(x0, requires_grad=True)
        h, a = lib.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)
        ((h ** 2).sum() + (a * a).sum()).backward()
        res.append([x.grad.numpy()] + [p.grad.numpy() for p in att.parameters()])
    for g, w in zip(res[1], res[0]):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)
