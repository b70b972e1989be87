"""What every model test checks, in one place.

A model is its loss written once, as its author would write it in PyTorch, against a `lib`
(tracejit or torch) and an `F` (tracejit or torch.nn.functional), over a dict of parameters and
a dict of data (NumPy arrays here, converted per library). tracejit runs it three ways (eagerly,
through `tj.grad(tj.compile(loss))`, and as a compiled function called on tensors that require
grad, inside eager autograd), and each is compared with PyTorch when it is installed and with
float64 central differences always."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

import tracejit as tj

try:
    import torch
except ImportError:          # the comparisons with torch skip; the finite differences still run
    torch = None

Arrays = dict[str, np.ndarray]
MODES = ("eager", "grad_of_compiled", "compiled_in_eager")
# float32 results agree with torch to about this; float64 ones to rounding
TOL = {np.float32: dict(rtol=2e-4, atol=2e-6), np.float64: dict(rtol=1e-9, atol=1e-12)}


@dataclass
class Model:
    name: str
    params: Callable[[np.random.Generator], Arrays]      # float64 arrays, cast per test
    data: Callable[[np.random.Generator], Arrays]        # inputs and targets (ints stay ints)
    loss: Callable                                       # loss(lib, F, params, data) -> scalar


def _cast(arrays: Arrays, dtype) -> Arrays:
    return {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in arrays.items()}


def instance(model: Model, dtype, seed: int = 0) -> tuple[Arrays, Arrays]:
    rng = np.random.default_rng(seed)
    return _cast(model.params(rng), dtype), _cast(model.data(rng), dtype)


# -- PyTorch ------------------------------------------------------------------------------------
def torch_loss_and_grads(model: Model, params: Arrays, data: Arrays) -> tuple[float, Arrays]:
    p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    d = {k: torch.tensor(v) for k, v in data.items()}
    loss = model.loss(torch, torch.nn.functional, p, d)
    loss.backward()
    return loss.item(), {k: t.grad.numpy() for k, t in p.items()}


# -- tracejit, three ways -----------------------------------------------------------------------
def _tj_loss(model: Model):
    return lambda p, d: model.loss(tj, tj, p, d)


def tj_loss_and_grads(model: Model, params: Arrays, data: Arrays, mode: str
                      ) -> tuple[float | None, Arrays]:
    if mode == "eager":
        p = {k: tj.tensor(v, requires_grad=True) for k, v in params.items()}
        loss = model.loss(tj, tj, p, {k: tj.tensor(v) for k, v in data.items()})
        loss.backward()
        return loss.item(), {k: t.grad.numpy() for k, t in p.items()}
    if mode == "grad_of_compiled":
        # gradients only (the loss of a compiled value_and_grad is checked by the SGD tests)
        grads = tj.grad(tj.compile(_tj_loss(model)), argnums=0)(params, data)
        return None, {k: g.numpy() for k, g in grads.items()}
    if mode == "compiled_in_eager":
        compiled = tj.compile(_tj_loss(model))
        p = {k: tj.tensor(v, requires_grad=True) for k, v in params.items()}
        loss = compiled(p, {k: tj.tensor(v) for k, v in data.items()})
        assert loss.requires_grad and loss.grad_fn is not None
        loss.backward()
        return loss.item(), {k: t.grad.numpy() for k, t in p.items()}
    raise ValueError(mode)


def assert_grads_close(got: Arrays, want: Arrays, **tol) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].shape == want[k].shape, (k, got[k].shape, want[k].shape)
        assert got[k].dtype == want[k].dtype, (k, got[k].dtype, want[k].dtype)
        np.testing.assert_allclose(got[k], want[k], err_msg=f"gradient of {k}", **tol)


def check_against_torch(model: Model, mode: str, dtype) -> None:
    params, data = instance(model, dtype)
    want_loss, want = torch_loss_and_grads(model, params, data)
    got_loss, got = tj_loss_and_grads(model, params, data, mode)
    tol = TOL[dtype]
    if got_loss is not None:
        np.testing.assert_allclose(got_loss, want_loss, **tol)
    assert_grads_close(got, want, **tol)


# -- float64 central differences ----------------------------------------------------------------
def check_finite_differences(model: Model, mode: str, coords_per_param: int = 3,
                             eps: float = 1e-6) -> None:
    """Each mode's float64 gradient at a few random coordinates of every parameter against
    (L(p + eps e) - L(p - eps e)) / 2 eps, with L evaluated eagerly in float64."""
    params, data = instance(model, np.float64)
    _, grads = tj_loss_and_grads(model, params, data, mode)
    tdata = {k: tj.tensor(v) for k, v in data.items()}

    def loss_at(p: Arrays) -> float:
        with tj.no_grad():
            return model.loss(tj, tj, {k: tj.tensor(v) for k, v in p.items()}, tdata).item()
    rng = np.random.default_rng(1)
    for name, value in params.items():
        for flat in rng.choice(value.size, size=min(coords_per_param, value.size), replace=False):
            idx = np.unravel_index(flat, value.shape)
            plus, minus = dict(params), dict(params)
            plus[name], minus[name] = value.copy(), value.copy()
            plus[name][idx] += eps
            minus[name][idx] -= eps
            numeric = (loss_at(plus) - loss_at(minus)) / (2 * eps)
            np.testing.assert_allclose(grads[name][idx], numeric, rtol=1e-5, atol=1e-8,
                                       err_msg=f"d loss / d {name}{list(idx)} ({mode})")


# -- a few SGD steps ----------------------------------------------------------------------------
def sgd_losses(model: Model, params: Arrays, data: Arrays, how: str, steps: int, lr: float
               ) -> list[float]:
    """The loss before each of `steps` plain SGD steps (p -= lr * p.grad), the way each library
    is used for it."""
    losses = []
    if how in ("torch", "eager"):        # the same loop, on torch or on tracejit's eager tensors
        lib, F = (torch, torch.nn.functional) if how == "torch" else (tj, tj)
        p = {k: lib.tensor(v, requires_grad=True) for k, v in params.items()}
        d = {k: lib.tensor(v) for k, v in data.items()}
        for _ in range(steps):
            loss = model.loss(lib, F, p, d)
            loss.backward()
            with lib.no_grad():
                for t in p.values():
                    t -= lr * t.grad
                    t.grad = None
            losses.append(loss.item())
    elif how == "compiled":
        step = tj.value_and_grad(tj.compile(_tj_loss(model)), argnums=0)
        p = dict(params)
        for _ in range(steps):
            loss, grads = step(p, data)
            p = {k: v - np.asarray(lr, v.dtype) * grads[k].numpy() for k, v in p.items()}
            losses.append(loss.item())
    else:
        raise ValueError(how)
    return losses


def check_sgd_trajectory(model: Model, how: str, steps: int, lr: float = 0.5) -> None:
    """`steps` float32 SGD steps run `how` ("eager" or "compiled") lose what torch's lose, and
    torch's losses fall (the model trains)."""
    p, d = instance(model, np.float32)
    want = sgd_losses(model, p, d, "torch", steps=steps, lr=lr)
    got = sgd_losses(model, p, d, how, steps=steps, lr=lr)
    assert want[-1] < want[0]
    np.testing.assert_allclose(got, want, rtol=1e-4)


# -- a module's training step, as a PyTorch loop writes it --------------------------------------
def training_step(lib, model, opt, loss_of: Callable, compiled: bool,
                          clip: float | None = 1.0) -> Callable:
    """step(*batch) -> loss: zero_grad, backward, clip_grad_norm_(clip) unless clip is None,
    opt.step(); with `compiled` the whole step is one tj.compile graph. loss_of(model, *batch)
    is the model's loss."""
    def step(*batch):
        loss = loss_of(model, *batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            lib.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss
    return tj.compile(step) if compiled else step
