"""The graph a backend runs has no stop_gradient: it only marks a constant for differentiation
(a compiled step's backward and optimizer are traced under no_grad, so they are full of them),
and left in, it hid GEMM operands' transposes from ir/matmul_fold.py and from fusion (each such
transpose became a copy kernel). Gradients of the traced graph still see it."""
from __future__ import annotations

import numpy as np

import tracejit as tj
from tracejit.ir.matmul_fold import fold_matmuls


def test_a_detached_transpose_is_a_blas_flag_not_a_copy(monkeypatch):
    monkeypatch.setenv("TRACEJIT_NUM_THREADS", "1")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 5)).astype(np.float32)
    b = rng.standard_normal((4, 5)).astype(np.float32)
    f = tj.compile(lambda a, b: a @ b.T.detach())
    low = f.lower(a, b)
    assert "stop_gradient" in low.as_text()                 # the traced graph keeps it
    kernels = low.kernels.splitlines()
    assert len(kernels) == 1 and "matmul" in kernels[0], low.kernels
    assert "stop_gradient" not in low.kernels
    np.testing.assert_allclose(f(a, b).numpy(), a @ b.T, rtol=1e-5, atol=1e-5)


def test_gradients_still_stop_there():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 5))
    b = rng.standard_normal((4, 5))
    ga, gb = tj.grad(tj.compile(lambda a, b: (a @ b.T.detach()).sum()), argnums=(0, 1))(a, b)
    np.testing.assert_allclose(ga.numpy(), np.ones((3, 4)) @ b, rtol=1e-12)
    np.testing.assert_array_equal(gb.numpy(), np.zeros_like(b))


def test_a_training_step_under_no_grad_has_no_stop_gradient_kernels(monkeypatch):
    """backward() and an SGD update inside tj.compile: every GEMM operand transpose is a BLAS
    flag, as without the no_grad barriers, and the step matches NumPy."""
    monkeypatch.setenv("TRACEJIT_NUM_THREADS", "1")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 8)).astype(np.float32)
    w0 = rng.standard_normal((8, 4)).astype(np.float32)
    w = tj.tensor(w0.copy(), requires_grad=True)

    def step(x):
        loss = (tj.tanh(x @ w) ** 2).mean()
        loss.backward()
        with tj.no_grad():
            w.sub_(0.1 * w.grad)
        w.grad = None
        return loss
    cstep = tj.compile(step)
    low = cstep.lower(x)
    assert "stop_gradient" not in low.kernels
    assert not any(ln.split("ops(")[1].startswith("transpose)") for ln in low.kernels.splitlines()
                   if "ops(" in ln), low.kernels
    cstep(x)
    h = np.tanh(x @ w0)
    g = x.T @ (2 * h * (1 - h * h) / h.size)
    np.testing.assert_allclose(w.detach().numpy(), w0 - 0.1 * g, rtol=1e-5, atol=1e-6)


def test_a_graph_without_stop_gradient_is_returned_as_is():
    f = tj.compile(lambda a, b: a @ b)
    g = f.lower(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32))._entry.graph
    assert fold_matmuls(g) is g
