"""Names that ported torch code uses and tracejit lacked: Tensor.eq/ne/lt/le/gt/ge (the MNIST
example's `pred.eq(target.view_as(pred)).sum().item()`), and the dtype aliases tj.bool and
tj.int (torch.bool, torch.int = int32). Checked against torch, eagerly and compiled."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("name", ["eq", "ne", "lt", "le", "gt", "ge"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_comparison_methods_match_torch(name, compiled):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, (4, 3)).astype(np.float64)
    b = rng.integers(0, 3, (3,)).astype(np.float64)          # broadcasts
    for other in (b, 1.0):
        def fn(x, y=None):
            return getattr(x, name)(y if y is not None else other)
        targs = (torch.tensor(a),) + ((torch.tensor(b),) if other is b else ())
        want = fn(*targs).numpy()
        f = tj.compile(fn) if compiled else fn
        got = f(*(tj.tensor(t.numpy()) for t in targs))
        assert got.dtype == tj.bool
        np.testing.assert_array_equal(got.numpy(), want)


def test_accuracy_line_of_the_mnist_example():
    logits = np.random.default_rng(1).standard_normal((8, 10))
    target = np.random.default_rng(2).integers(0, 10, 8)
    target[:3] = logits[:3].argmax(1)
    for lib in (torch, tj):
        output, t = lib.tensor(logits), lib.tensor(target)
        pred = output.argmax(dim=1, keepdim=True)
        correct = pred.eq(t.view_as(pred)).sum().item()
        if lib is torch:
            want = correct
    assert correct == want >= 3


def test_dtype_aliases_are_torchs():
    assert tj.bool is tj.bool_ and tj.int is tj.int32 and tj.long is tj.int64
    m = tj.triu(tj.ones(3, 3, dtype=tj.bool), diagonal=1)
    np.testing.assert_array_equal(
        m.numpy(), torch.triu(torch.ones(3, 3, dtype=torch.bool), diagonal=1).numpy())
    assert tj.zeros(2, dtype=tj.int).numpy().dtype == torch.zeros(2, dtype=torch.int).numpy().dtype
