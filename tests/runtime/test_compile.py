"""@tj.compile: caching per signature, static arguments, retrace reasons, pytrees, captures,
dumps, lowering, errors, and compiled functions inside eager autograd."""
import logging

import numpy as np
import pytest

import tracejit as tj
from conftest import assert_close


def test_cache_hits_and_misses():
    @tj.compile
    def f(x, y):
        return x * y + 1

    a = np.ones(3, np.float32)
    f(a, a)
    f(a, a)
    f(tj.tensor(a), a)                       # a Tensor of the same type shares the entry
    assert f.cache_info() == (2, 1, 1)
    f(np.ones(4, np.float32), np.ones(4, np.float32))
    f(a.astype(np.float64), a.astype(np.float64))
    assert f.cache_info().misses == 3 and f.cache_info().entries == 3
    tj.clear_cache()
    assert f.cache_info() == (0, 0, 0)


def test_retrace_reasons_are_logged(monkeypatch, caplog):
    monkeypatch.setenv("TRACEJIT_LOG", "recompiles")

    @tj.compile(static_argnums=1)
    def f(x, n):
        return x * n

    with caplog.at_level(logging.WARNING, logger="tracejit"):
        f(np.ones(3, np.float32), 2)
        f(np.ones(4, np.float32), 2)
        f(np.ones(4, np.float32), 3)
        f(np.ones(4, np.float64), 3)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("x: f32[3] -> f32[4]" in m for m in msgs), msgs
    assert any("static argument 1: 2 -> 3" in m for m in msgs), msgs
    assert any("x: f32[4] -> f64[4]" in m for m in msgs), msgs


def test_python_scalars_are_traced_and_weak():
    @tj.compile
    def step(w, lr):
        return w - lr * w

    w = np.ones(3, np.float32)
    out = step(w, 0.1)
    assert out.dtype is tj.float32                 # a weak scalar does not promote
    assert_close(out, w - np.float32(0.1) * w)
    step(w, 0.01)
    assert step.cache_info().misses == 1            # a new learning rate does not retrace
    assert_close(step(w, 0.5), w * 0.5)


def test_static_args_and_names():
    @tj.compile(static_argnames=("axis",))
    def f(x, axis=0):
        return x.sum(axis=axis)

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert_close(f(x, axis=0), x.sum(0))
    assert_close(f(x, axis=1), x.sum(1))
    assert f.cache_info().misses == 2
    with pytest.raises(TypeError, match="static arguments must be hashable"):
        f(x, axis=[0])


def test_pytrees_in_and_out():
    @tj.compile
    def f(params, batch):
        h = batch["x"] @ params[0] + params[1]
        return {"out": h, "parts": (h.sum(), [h * 2])}

    p = (np.ones((2, 3), np.float32), np.zeros(3, np.float32))
    b = {"x": np.ones((4, 2), np.float32)}
    r = f(p, b)
    assert set(r) == {"out", "parts"}
    assert isinstance(r["parts"], tuple) and isinstance(r["parts"][1], list)
    assert_close(r["parts"][0], np.float32(24.0))
    assert_close(r["parts"][1][0], np.full((4, 3), 4.0, np.float32))


def test_data_dependent_control_flow_error():
    @tj.compile
    def f(x):
        if x.sum() > 0:
            return x
        return -x

    with pytest.raises(RuntimeError, match=r"tj\.where.*static") as e:
        f(np.ones(3, np.float32))
    assert "test_compile.py" in str(e.value)
    with pytest.raises(RuntimeError, match="traced"):
        tj.compile(lambda x: float(x.sum()))(np.ones(2, np.float32))


def test_shape_errors_name_op_shapes_and_user_line():
    with pytest.raises(ValueError, match=r"add: shapes f32\[3\], f32\[4\] are not broadcastable "
                                         r"\(at test_compile\.py:\d+\)"):
        tj.compile(lambda a, b: a + b)(np.ones(3, np.float32), np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"matmul: shapes do not align: f32\[2, 3\] @ f32\[2, 3\]"
                                         r".*test_compile\.py"):
        tj.tensor(np.ones((2, 3), np.float32)) @ tj.tensor(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"reshape: cannot reshape f32\[6\] to \[4, -1\]"):
        tj.ones(6).reshape(4, -1)
    with pytest.raises(IndexError, match=r"index 5 is out of bounds for axis 0 with size 3"):
        tj.ones(3)[5]
    with pytest.raises(ValueError, match=r"step must be greater than zero"):
        tj.ones(3)[::-1]
    with pytest.raises(TypeError, match=r"unsupported argument type str.*test_compile\.py"):
        tj.compile(lambda a: a)("hello")
    with pytest.raises(TypeError, match=r"unsupported array dtype complex64.*test_compile\.py"):
        tj.compile(lambda a: a)(np.ones(2, np.complex64))


def test_dump_ir(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TRACEJIT_DUMP", "ir")

    @tj.compile
    def loss(x, w):
        return tj.tanh(x @ w).sum()

    loss(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32))
    err = capsys.readouterr().err
    assert "graph @loss(%x: f32[2,3], %w: f32[3,4]) -> (f32[])" in err
    assert "tanh" in err and "test_compile.py" in err
    monkeypatch.setenv("TRACEJIT_DUMP", "ir,grad")
    monkeypatch.setenv("TRACEJIT_DUMP_DIR", str(tmp_path))
    tj.grad(loss, argnums=1)(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert any(f.endswith(".grad.txt") for f in files) and any(f.endswith(".ir.txt") for f in files)


def test_lower_shows_forward_and_gradient_ir():
    @tj.compile
    def loss(x, w, b):
        return tj.tanh(x @ w + b).sum()

    args = (np.ones((5, 3), np.float32), np.ones((3, 2), np.float32), np.zeros(2, np.float32))
    text = loss.lower(*args).as_text()
    assert text.startswith("graph @loss(%x: f32[5,3], %w: f32[3,2], %b: f32[2]) -> (f32[])")
    for op in ("matmul", "broadcast", "add", "tanh", "sum"):
        assert f"= {op} " in text
    g = tj.grad(loss, argnums=(1, 2))
    gtext = g.lower(*args).as_text()
    assert "-> (f32[3,2], f32[2])" in gtext and "transpose" in gtext
    assert g.cache_info().entries == 1


def test_grad_of_compiled_matches_eager_and_has_aux():
    def f(x, w):
        y = tj.tanh(x @ w)
        return (y * y).mean(), y.sum()

    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float64)
    w = np.random.default_rng(1).standard_normal((3, 2)).astype(np.float64)
    cf = tj.compile(f)
    (v, aux), (gx, gw) = tj.value_and_grad(cf, argnums=(0, 1), has_aux=True)(x, w)
    (v2, aux2), (gx2, gw2) = tj.value_and_grad(f, argnums=(0, 1), has_aux=True)(x, w)
    assert_close(v, v2)
    assert_close(aux, aux2)
    assert_close(gx, gx2, rtol=1e-10, atol=1e-12)
    assert_close(gw, gw2, rtol=1e-10, atol=1e-12)
    gw3, aux3 = tj.grad(cf, argnums=1, has_aux=True)(x, w)
    assert_close(gw3, gw2)
    assert_close(aux3, aux2)


def test_grad_of_compiled_with_pytree_argument():
    @tj.compile
    def loss(params, x):
        return ((x @ params["w"] + params["b"]) ** 2).sum()

    params = {"w": np.ones((3, 2)), "b": np.zeros(2)}
    x = np.arange(6.0).reshape(2, 3)
    g = tj.grad(loss)(params, x)
    assert set(g) == {"w", "b"}
    h = x @ params["w"]
    assert_close(g["w"], x.T @ (2 * h))
    assert_close(g["b"], (2 * h).sum(0))


def test_nested_grad_and_grad_inside_compile():
    f = lambda x: (tj.sin(x) * x).sum()                         # noqa: E731
    x = np.array([0.3, 1.2])
    gg = tj.grad(lambda y: tj.grad(f)(y).sum())
    want = (2 * np.cos(x) - x * np.sin(x))
    assert_close(gg(tj.tensor(x)), want)
    assert_close(tj.compile(gg)(x), want)
    assert_close(tj.grad(lambda y: tj.grad(tj.compile(f))(y).sum())(x), want)
    inside = tj.compile(lambda y: tj.grad(f)(y) * 2)
    assert_close(inside(x), 2 * (np.sin(x) + x * np.cos(x)))
    assert "cos" in inside.lower(x).as_text()


def test_jacobian_and_hessian():
    def f(x):
        return tj.stack([x[0] * x[1], tj.sin(x[0])])

    x = np.array([0.5, 2.0])
    J = tj.jacobian(f)(tj.tensor(x))
    assert_close(J, np.array([[2.0, 0.5], [np.cos(0.5), 0.0]]))
    assert_close(tj.jacobian(tj.compile(f))(x), J)
    H = tj.hessian(lambda x: (x[0] ** 2) * x[1])(tj.tensor(x))
    assert_close(H, np.array([[4.0, 1.0], [1.0, 0.0]]))


def test_compiled_function_inside_eager_autograd():
    @tj.compile
    def layer(x, w, b):
        return tj.tanh(x @ w + b)

    rng = np.random.default_rng(0)
    x = tj.tensor(rng.standard_normal((4, 3)))
    w = tj.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    b = tj.tensor(np.zeros(2), requires_grad=True)
    y = layer(x, w, b)
    assert y.grad_fn.name() == "CompiledFunctionBackward<layer>"
    (y * y).sum().backward()
    w2 = tj.tensor(w.detach().numpy(), requires_grad=True)
    b2 = tj.tensor(np.zeros(2), requires_grad=True)
    (tj.tanh(x @ w2 + b2) ** 2).sum().backward()
    assert_close(w.grad, w2.grad, rtol=1e-10)
    assert_close(b.grad, b2.grad, rtol=1e-10)
    # second order through the compiled function
    (g,) = tj.autograd.grad(layer(x, w, b).sum(), w, create_graph=True)
    (gg,) = tj.autograd.grad((g * g).sum(), w)
    (g2,) = tj.autograd.grad(tj.tanh(x @ w2 + b2).sum(), w2, create_graph=True)
    (gg2,) = tj.autograd.grad((g2 * g2).sum(), w2)
    assert_close(gg, gg2, rtol=1e-9)


def test_compiled_backward_saves_only_what_it_needs():
    @tj.compile
    def f(x):
        return tj.exp(tj.sin(x) * 3.0).sum()

    x = tj.tensor(np.ones(4), requires_grad=True)
    y = f(x)
    node = y.grad_fn
    assert len(node.residuals) <= 2          # exp's output and cos(x) (or x), not every temp
    y.backward()
    assert_close(x.grad, np.exp(3 * np.sin(1.0)) * 3 * np.cos(1.0) * np.ones(4))


def test_captured_tensors_are_read_fresh_and_get_gradients():
    w = tj.tensor(np.ones(3), requires_grad=True)

    @tj.compile
    def f(x):
        return (x * w).sum()

    x = np.arange(3.0)
    assert f(x).item() == 3.0
    with tj.no_grad():
        w.mul_(2.0)                           # updated in place: the next call sees it
    assert f(x).item() == 6.0
    assert f.cache_info().misses == 1
    f(x).backward()                           # captured leaves get gradients
    assert_close(w.grad, x)
    w.data = tj.ones(4, dtype=tj.float64)     # a new shape: traced again, not stale
    with pytest.raises(ValueError, match="mul: shapes"):
        f(x)


def test_closure_numpy_array_is_an_input_and_a_list_a_constant():
    c = np.array([1.0, 2.0], np.float32)           # read by reference at every call
    f = tj.compile(lambda x: x * c + [3.0, 4.0])
    text = f.lower(np.ones(2, np.float32)).as_text()
    assert "%cap0: f32[2]" in text and "constant {value=[3.0, 4.0]}" in text


def test_compile_inside_compile_inlines():
    inner = tj.compile(lambda x: x * 2)
    outer = tj.compile(lambda x: inner(x) + 1)
    assert_close(outer(np.ones(2, np.float32)), np.full(2, 3.0, np.float32))
    assert inner.cache_info().misses == 0


def test_non_float_outputs_and_int_inputs():
    f = tj.compile(lambda x, i: (x[i], i * 2, x > 0))
    a, b, c = f(np.array([1.0, -2.0, 3.0], np.float32), np.array([2, 0]))
    assert_close(a, np.array([3.0, 1.0], np.float32))
    assert b.dtype is tj.int64 and b.tolist() == [4, 0]
    assert c.dtype is tj.bool_


def test_escaped_tracer_holds_the_value_of_its_call():
    leaked = []

    @tj.compile
    def f(x):
        leaked.append(x)                  # stored outside: not a traced value afterwards
        leaked.append(x * 3)
        return x * 2

    f(np.ones(2, np.float32))
    assert not leaked[0]._traced and not leaked[1]._traced
    assert_close(leaked[1], np.full(2, 3.0, np.float32))
    g = tj.compile(lambda y: y + leaked[0])
    assert_close(g(np.ones(2, np.float32)), np.full(2, 2.0, np.float32))
