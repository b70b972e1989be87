"""nn.functional.ctc_loss and nn.CTCLoss against torch: values and gradients (through
log_softmax, as models use it) for padded and concatenated targets, every reduction, repeated
labels, a non-zero blank, empty targets, unbatched input, impossible alignments with and
without zero_infinity, a long float32 input (log-domain stability), tj.compile, and errors."""
import numpy as np
import pytest
import torch

import tracejit as tj
import tracejit.nn.functional as F

RS = np.random.RandomState(0)


def both(x, targets, il, tl, dtype=np.float64, compiled=False, **kw):
    """(tracejit loss, grad wrt x), (torch loss, grad wrt x)."""
    xj = tj.tensor(x.astype(dtype), requires_grad=True)
    fn = (lambda a: F.ctc_loss(a.log_softmax(-1), tj.tensor(targets), il, tl, **kw))
    lj = (tj.compile(fn) if compiled else fn)(xj)
    lj.sum().backward()
    xt = torch.tensor(x.astype(dtype), requires_grad=True)
    lt = torch.nn.functional.ctc_loss(xt.log_softmax(-1), torch.tensor(targets),
                                      torch.tensor(il), torch.tensor(tl), **kw)
    lt.sum().backward()
    return (lj.detach().numpy(), xj.grad.numpy()), (lt.detach().numpy(), xt.grad.numpy())


def check(a, b, tol):
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol)


def test_padded_and_concatenated_targets_every_reduction_float64():
    T, N, C, S = 7, 4, 5, 3
    x = RS.randn(T, N, C)
    tg = np.array([[1, 1, 2], [3, 4, 4], [2, 0, 0], [1, 2, 3]])   # repeats; padding 0
    il, tl = [7, 6, 5, 7], [3, 3, 1, 0]                            # an empty target
    for red in ("none", "mean", "sum"):
        a, b = both(x, tg, il, tl, reduction=red)
        check(a, b, 1e-10)
    cat = np.concatenate([tg[i, :tl[i]] for i in range(N)])
    check(*both(x, cat, il, tl, reduction="none"), 1e-10)
    # a non-zero blank (the last class) and targets that use class 0
    check(*both(x, np.array([[0, 1, 0], [2, 2, 3], [1, 0, 0], [0, 0, 0]]), il, tl,
                blank=C - 1), 1e-10)
    # unbatched (T, C) input with 1-D targets and scalar lengths; T = 1
    check(*both(x[:, 0], np.array([1, 2]), 7, 2), 1e-10)
    check(*both(x[:1, :1], np.array([[3]]), [1], [1]), 1e-10)


def test_float32_long_input_and_the_module():
    T, N, C = 120, 2, 6
    x = (RS.randn(T, N, C) * 3).astype(np.float32)
    tg = RS.randint(1, C, (N, 40))
    a, b = both(x, tg, [120, 90], [40, 25], dtype=np.float32, reduction="sum")
    assert np.isfinite(a[0]).all() and a[0] > 100          # a loss far below exp's range
    check(a, b, 2e-4)
    m = tj.nn.CTCLoss(blank=0, reduction="mean")
    lp = tj.tensor(x).log_softmax(2)
    np.testing.assert_allclose(
        m(lp, tj.tensor(tg), tj.tensor([120, 90]), tj.tensor([40, 25])).item(),
        torch.nn.CTCLoss()(torch.tensor(x).log_softmax(2), torch.tensor(tg),
                           torch.tensor([120, 90]), torch.tensor([40, 25])).item(), rtol=1e-5)


def test_impossible_alignments_and_zero_infinity():
    T, N, C = 4, 3, 4
    x = RS.randn(T, N, C)
    # row 0 needs 4 frames for [1, 1, 2] (a blank between the repeats) but has 3; row 2 has 2
    tg = np.array([[1, 1, 2], [1, 2, 3], [3, 3, 0]])
    il, tl = [3, 4, 2], [3, 3, 2]
    a, b = both(x, tg, il, tl, reduction="none")
    assert np.isinf(a[0][0]) and np.isinf(a[0][2]) and np.isfinite(a[0][1])
    check(a, b, 1e-10)                      # inf losses, NaN gradients for those rows, as torch
    for red in ("none", "mean", "sum"):
        a, b = both(x, tg, il, tl, reduction=red, zero_infinity=True)
        check(a, b, 1e-10)
        assert np.isfinite(a[1]).all()


def test_compiled():
    # small: the loop over frames is unrolled into the trace, and compiling it costs
    T, N, C = 3, 2, 4
    x = RS.randn(T, N, C).astype(np.float32)
    tg = np.array([[1, 2], [3, 0]])
    il, tl = [3, 2], [2, 1]
    a, b = both(x, tg, il, tl, dtype=np.float32, compiled=True)
    check(a, b, 1e-5)
    # lengths as traced tensors work with padded targets
    f = tj.compile(lambda lp, t, i, l: F.ctc_loss(lp, t, i, l, reduction="sum"))
    lp = tj.tensor(x).log_softmax(2)
    got = f(lp, tj.tensor(tg), tj.tensor(il), tj.tensor(tl)).item()
    want = torch.nn.functional.ctc_loss(torch.tensor(x).log_softmax(2), torch.tensor(tg),
                                        il, tl, reduction="sum").item()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # concatenated targets need lengths known at trace time
    g = tj.compile(lambda lp, t, i, l: F.ctc_loss(lp, t, i, l))
    with pytest.raises(NotImplementedError, match="concatenated 1-D targets"):
        g(lp, tj.tensor([1, 2, 3]), tj.tensor(il), tj.tensor(tl))


def test_errors():
    lp = tj.zeros(4, 2, 3).log_softmax(2)
    tg = tj.tensor([[1, 2], [1, 1]])
    with pytest.raises(ValueError, match="input_lengths to have value at most 4"):
        F.ctc_loss(lp, tg, [5, 4], [2, 2])
    with pytest.raises(ValueError, match="blank must be in label range"):
        F.ctc_loss(lp, tg, [4, 4], [2, 2], blank=3)
    with pytest.raises(TypeError, match="targets must be integer"):
        F.ctc_loss(lp, tg.float(), [4, 4], [2, 2])
    with pytest.raises(ValueError, match="size at least 3 at dimension 1"):
        F.ctc_loss(lp, tg, [4, 4], [3, 2])
    with pytest.raises(ValueError, match="input_lengths must have 2"):
        F.ctc_loss(lp, tg, [4], [2, 2])
    with pytest.raises(ValueError, match="sum\\(target_lengths\\)"):
        F.ctc_loss(lp, tj.tensor([1, 2, 1]), [4, 4], [2, 2])
