"""y.copy_(src) of a same-shape, same-dtype src that requires grad gives y a node of its own
onto src's history (torch's CopyBackwards): before, y took src's node, or for a leaf src no
node at all, so y became a leaf whose gradient stopped there and src got none (silently), and
a hook or retain_grad on y saw src's other gradients. clone() and a copying contiguous() keep
-0.0 (x + 0 made it 0.0, so 1 / x.clone() was inf where torch gives -inf)."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

X = np.array([[0.7], [-0.2]], dtype=np.float32)


@pytest.mark.parametrize("src_kind", ["leaf", "non-leaf"])
def test_copy_from_a_tensor_that_requires_grad_passes_the_gradient_on(src_kind):
    got = []
    for lib in (tj, torch):
        x = lib.tensor(X, requires_grad=True)
        src = x if src_kind == "leaf" else x * 3.0
        y = x * 2.0
        y.copy_(src)
        seen = []
        y.register_hook(lambda g: seen.append(g.detach().numpy().copy()))
        (y * y).sum().backward() if src_kind == "leaf" else \
            ((y * y).sum() + (src * 5.0).sum()).backward()
        assert y.grad_fn is not None and y.grad_fn is not src.grad_fn
        got.append((x.grad.numpy(), seen))
    np.testing.assert_allclose(got[0][0], got[1][0], rtol=1e-6)
    assert len(got[0][1]) == len(got[1][1]) == 1
    np.testing.assert_allclose(got[0][1][0], got[1][1][0], rtol=1e-6)


def test_copy_of_a_leaf_under_no_grad_stays_without_history():
    x = tj.tensor(X, requires_grad=True)
    y = tj.tensor(np.zeros_like(X))
    with tj.no_grad():
        y.copy_(x)
    assert not y.requires_grad and y.grad_fn is None
    np.testing.assert_array_equal(y.numpy(), X)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_clone_and_contiguous_keep_negative_zero(dtype):
    a = np.array([-0.0, 0.0, 1.0, np.nan, -np.inf], dtype)
    x, t = tj.tensor(a), torch.tensor(a)
    np.testing.assert_array_equal(np.signbit(x.clone().numpy()), np.signbit(a))
    m, mt = x.expand(2, 5).T.contiguous(), t.expand(2, 5).T.contiguous()
    np.testing.assert_array_equal(np.signbit(m.numpy()), np.signbit(mt.numpy()))
    np.testing.assert_array_equal((1 / x.clone()).numpy(), (1 / t.clone()).numpy())


def test_clone_of_integers_stays_integer():
    x = tj.tensor(np.array([1, -2], np.int64))
    assert x.clone().dtype == tj.int64
    np.testing.assert_array_equal(x.clone().numpy(), [1, -2])
