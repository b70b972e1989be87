"""Ops traced under no_grad need a stop_gradient barrier only where a gradient could reach an
operand: a value computed under no_grad from constants, hyperparameter casts and barriered
values is itself one no gradient reaches (tracer/no_grad_ir.no_grad_result). Gradients and
values stay torch's."""
from __future__ import annotations

import numpy as np
import torch

import tracejit as tj


def _barriers(cf, *args) -> int:
    g = cf.lower(*args).graph
    return sum(1 for ins in g.instrs if ins.prim.name == "stop_gradient")


def _scale(lib):
    # a hyperparameter cast the way an optimizer casts one: float64 constant -> float32
    return lib.tensor(0.25, dtype=lib.float64).to(lib.float32)


def _f(lib, x, s):
    with lib.no_grad():
        c = _scale(lib)
        y = s * 2.0                 # s reaches a gradient: one barrier
        z = y + c                   # y is barriered, c a cast of a constant: none needed
        w = z * c - c               # none needed either
    return (x * w).sum() + (x * x).sum()


def test_ops_on_gradless_values_need_no_barrier():
    x = np.linspace(-1, 1, 6).astype(np.float32)
    s = np.arange(6, dtype=np.float32)
    cf = tj.compile(lambda x, s: _f(tj, x, s))
    assert _barriers(cf, tj.tensor(x), tj.tensor(s)) == 1


def test_gradients_match_torch():
    x = np.linspace(-1, 1, 6).astype(np.float32)
    s = np.arange(6, dtype=np.float32)
    cf = tj.compile(lambda x, s: _f(tj, x, s))
    xt, st = tj.tensor(x, requires_grad=True), tj.tensor(s, requires_grad=True)
    out = cf(xt, st)
    out.backward()
    xr, sr = torch.tensor(x, requires_grad=True), torch.tensor(s, requires_grad=True)
    ref = _f(torch, xr, sr)
    ref.backward()
    np.testing.assert_allclose(out.item(), ref.item(), rtol=1e-6)
    np.testing.assert_allclose(xt.grad.numpy(), xr.grad.numpy(), rtol=1e-6)
    assert st.grad is None or not st.grad.numpy().any()
    # and through the IR's reverse mode: the no_grad part is a constant to tj.grad too
    gx, gs = tj.grad(tj.compile(lambda x, s: _f(tj, x, s)), argnums=(0, 1))(
        tj.tensor(x), tj.tensor(s))
    np.testing.assert_allclose(gx.numpy(), xr.grad.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(gs.numpy(), np.zeros(6, np.float32))


def test_adamw_step_traces_few_barriers():
    """A compiled AdamW step: the update reads each parameter, gradient and moment through a
    barrier; its hyperparameter casts and everything computed from them need none."""
    tj.manual_seed(0)
    model = tj.nn.Sequential(tj.nn.Linear(4, 8), tj.nn.Tanh(), tj.nn.Linear(8, 1))
    opt = tj.optim.AdamW(model.parameters(), lr=1e-2)

    def step(x):
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    cf = tj.compile(step)
    x = tj.tensor(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    n = _barriers(cf, x)
    # 4 parameters; the old rule put a barrier after nearly every op of the update (~33 each)
    assert n <= 12 * 4, n


def test_the_record_holds_no_value_alive():
    """The graph's record of values no gradient reaches is weak: values a pass drops from the
    graph are freed with their instructions."""
    import gc
    import weakref
    from tracejit.ir import dtypes
    from tracejit.ir.core import Aval, Graph
    from tracejit.ir.primitives import P
    from tracejit.tracer.no_grad_ir import no_grad_result
    g = Graph("f")
    x = g.add_input(Aval((3,), dtypes.f32))
    c = g.emit(P.constant, [], {"value": np.float32(2.0)})
    y = no_grad_result(g.emit(P.mul, [c, c], {}), [c, c])
    assert y in g.gradless
    ref = weakref.ref(y)
    g.instrs.clear()
    del y, c
    gc.collect()
    assert ref() is None
    assert x.graph is g
