"""Eager autograd as PyTorch teaches it."""
import gc
import weakref

import numpy as np
import pytest

import tracejit as tj
from conftest import assert_close


def test_design_example():
    x = tj.tensor(3.0, requires_grad=True)
    y = x ** 2 + x * 2 + 1
    y.backward()
    assert x.grad.item() == 8.0
    assert y.grad_fn.name() == "AddBackward0"
    assert x.grad_fn is None and x.is_leaf and not y.is_leaf


def test_node_names_and_next_functions():
    x = tj.tensor(np.ones(3, np.float32), requires_grad=True)
    c = tj.tensor(np.ones(3, np.float32))
    names = {
        "MulBackward0": x * c, "SubBackward0": x - c, "DivBackward0": x / c,
        "NegBackward0": -x, "PowBackward0": x ** 2, "PowBackward1": x ** x,
        "ExpBackward0": tj.exp(x), "SinBackward0": tj.sin(x), "TanhBackward0": tj.tanh(x),
        "SumBackward0": x.sum(), "SumBackward1": tj.sum(x.reshape(3, 1), dim=0),
        "MeanBackward0": x.mean(), "MeanBackward1": x.mean(dim=0),
        "ViewBackward0": x.reshape(3, 1), "ExpandBackward0": tj.broadcast_to(x, (2, 3)),
        "SliceBackward0": x[1:], "IndexBackward0": x[np.array([0, 2])],
        "SigmoidBackward0": tj.sigmoid(x), "SoftmaxBackward0": tj.softmax(x, 0),
        "MmBackward0": tj.reshape(x, (1, 3)) @ tj.ones(3, 2),
        "ToCopyBackward0": x.double(), "CatBackward0": tj.cat([x, x]),
    }
    for name, t in names.items():
        assert t.grad_fn.name() == name, (name, t.grad_fn.name())
    y = x * c
    (fn, idx), (none, _) = y.grad_fn.next_functions
    assert fn.name() == "AccumulateGrad" and idx == 0 and none is None
    z = y * x
    assert z.grad_fn.next_functions[0][0] is y.grad_fn
    assert z.grad_fn.next_functions[1][0] is fn       # one AccumulateGrad per leaf


def test_grad_accumulates_and_zero():
    x = tj.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    assert x.grad.tolist() == [6.0, 6.0]
    x.grad.zero_()
    assert x.grad.tolist() == [0.0, 0.0]


def test_retain_graph_error_mentions_retain_graph():
    x = tj.tensor([1.0, 2.0], requires_grad=True)
    y = (tj.exp(x) * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert_close(x.grad, 2 * (np.exp([1, 2]) * np.array([2, 3])))
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_backward_errors():
    x = tj.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar"):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        tj.tensor([1.0]).sum().backward()
    with pytest.raises(RuntimeError, match="floating point"):
        tj.tensor([1, 2], requires_grad=True)
    (x * 2).backward(gradient=tj.tensor([1.0, 0.5]))
    assert x.grad.tolist() == [2.0, 1.0]
    with pytest.raises(RuntimeError, match="Mismatch in shape"):
        (x * 2).backward(gradient=tj.tensor([1.0]))


def test_non_leaf_grad_warns_and_retain_grad():
    x = tj.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    z = y * y
    with pytest.warns(UserWarning, match="not a leaf"):
        assert y.grad is None
    y.retain_grad()
    z.sum().backward()
    assert y.grad.tolist() == [4.0, 8.0]
    assert x.grad.tolist() == [8.0, 16.0]


def test_hooks_replace_gradient_and_remove():
    x = tj.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    h = x.register_hook(lambda g: g * 10)
    y = x * 2
    hy = y.register_hook(lambda g: seen.append(g.tolist()))
    y.sum().backward()
    assert seen == [[1.0, 1.0]]
    assert x.grad.tolist() == [20.0, 20.0]
    h.remove()
    hy.remove()
    x.grad = None
    (x * 2).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]


def test_no_grad_enable_grad_detach():
    x = tj.tensor([1.0], requires_grad=True)
    with tj.no_grad():
        y = x * 2
        with tj.enable_grad():
            z = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad
    d = x.detach()
    assert not d.requires_grad
    d.add_(1.0)                      # detach shares storage and version counter
    assert x.item() == 2.0
    w = (x * 3)
    w.detach_()
    assert w.grad_fn is None and not w.requires_grad

    @tj.no_grad()
    def f(a):
        return a * 2
    assert not f(x).requires_grad
    assert not x.data.requires_grad and x.data.item() == 2.0


def test_inplace_on_leaf_requiring_grad_errors():
    x = tj.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad.*in-place"):
        x.add_(1.0)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        x[0] = 2.0
    with tj.no_grad():
        x.mul_(3.0)                 # allowed: optimizer-style update
    assert x.item() == 3.0


def test_modified_saved_tensor_reported_at_backward():
    x = tj.tensor([1.0, 2.0], requires_grad=True)
    y = x * 1.0
    z = tj.exp(y) * y               # MulBackward0 saves y
    y.mul_(2.0)
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation.*version 1; "
                                           r"expected version 0.*MulBackward0"):
        z.sum().backward()


def test_inplace_on_non_leaf_is_differentiated():
    x = tj.tensor([1.0, 2.0], requires_grad=True)
    y = x * 1.0
    y.mul_(x)                       # y = x * x
    y[0] = 5.0
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 4.0]
    assert y._version_count == 2


def test_autograd_grad_api():
    x = tj.tensor([1.0, 2.0], requires_grad=True)
    w = tj.tensor([3.0, 4.0], requires_grad=True)
    u = tj.tensor([1.0], requires_grad=True)
    y = (x * w).sum()
    gx, gw = tj.autograd.grad(y, [x, w], retain_graph=True)
    assert gx.tolist() == [3.0, 4.0] and gw.tolist() == [1.0, 2.0]
    assert x.grad is None                            # grad() does not accumulate
    with pytest.raises(RuntimeError, match="allow_unused=True"):
        tj.autograd.grad(y, [x, u], retain_graph=True)
    gx, gu = tj.autograd.grad(y, [x, u], allow_unused=True, retain_graph=True)
    assert gu is None
    (gx2,) = tj.autograd.grad(y * 2, x, grad_outputs=tj.tensor(0.5))
    assert gx2.tolist() == [3.0, 4.0]


def test_higher_order_eager():
    x = tj.tensor(2.0, requires_grad=True)
    y = x ** 3
    (g,) = tj.autograd.grad(y, x, create_graph=True)
    (gg,) = tj.autograd.grad(g, x, create_graph=True)
    (ggg,) = tj.autograd.grad(gg, x)
    assert (g.item(), gg.item(), ggg.item()) == (12.0, 12.0, 6.0)


class Square(tj.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


def test_custom_function():
    x = tj.tensor([3.0, -1.0], requires_grad=True)
    y = Square.apply(x)
    assert y.grad_fn.name() == "SquareBackward"
    y.sum().backward()
    assert x.grad.tolist() == [6.0, -2.0]
    x2 = tj.tensor([3.0], requires_grad=True)
    (g,) = tj.autograd.grad(Square.apply(x2).sum(), x2, create_graph=True)
    (gg,) = tj.autograd.grad(g.sum(), x2)
    assert gg.item() == 2.0


def test_custom_function_needs_input_grad_and_errors():
    seen = {}

    class Bad(tj.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            seen["needs"] = ctx.needs_input_grad
            return x * y

        @staticmethod
        def backward(ctx, g):
            return g

    class WrongShape(tj.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g.sum()

    x = tj.tensor([1.0, 2.0], requires_grad=True)
    y = tj.tensor([1.0, 2.0])
    out = Bad.apply(x, y)
    assert seen["needs"] == (True, False)
    with pytest.raises(RuntimeError, match="incorrect number of gradients \\(expected 2, got 1\\)"):
        out.sum().backward()
    with pytest.raises(RuntimeError, match="invalid gradient at index 0 - got \\[\\] but expected "
                                           "shape compatible with \\[2\\]"):
        WrongShape.apply(x).sum().backward()


def test_gradcheck_catches_a_wrong_gradient():
    class Wrong(tj.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 3 * x * g

    x = tj.tensor(np.array([1.0, 2.0]), requires_grad=True)
    assert tj.autograd.gradcheck(lambda a: Square.apply(a), [x])
    with pytest.raises(tj.autograd.GradcheckError, match="Jacobian mismatch"):
        tj.autograd.gradcheck(lambda a: Wrong.apply(a), [x])
    assert not tj.autograd.gradcheck(lambda a: Wrong.apply(a), [x], raise_exception=False)
    with pytest.raises(RuntimeError, match="float64"):
        tj.autograd.gradcheck(lambda a: a * 2, [tj.tensor([1.0], requires_grad=True)])


def test_checkpoint_recomputes_and_matches():
    calls = []

    def block(a):
        calls.append(1)
        return tj.tanh(a * 2.0).sum()

    x = tj.tensor(np.array([0.1, 0.2]), requires_grad=True)
    y = tj.checkpoint(block, x)
    assert y.grad_fn.name() == "CheckpointFunctionBackward"
    y.backward()
    assert len(calls) == 2
    assert_close(x.grad, 2 * (1 - np.tanh(2 * np.array([0.1, 0.2])) ** 2))


def test_memory_freed_after_backward():
    x = tj.tensor(np.ones(1000), requires_grad=True)
    big = tj.exp(x)
    ref = weakref.ref(big._data)    # the memory: ExpBackward0 saves its output's array
    loss = (big * 2).sum()
    del big
    gc.collect()
    assert ref() is not None        # kept alive by the graph until backward
    loss.backward()
    gc.collect()
    assert ref() is None            # freed by backward (no retain_graph)


def test_deep_chain_no_recursion_error():
    x = tj.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.backward()
    assert x.grad.item() == 1.0


def test_deep_traced_graph_no_recursion_error():
    def f(a):
        for _ in range(100_000):
            a = a + 1.0
        return a.sum()
    g = tj.grad(tj.compile(f))(np.zeros(2, np.float32))
    assert_close(g, np.ones(2, np.float32))
