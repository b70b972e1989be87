"""The compiled fuzzer's module modes (tests/compiled_fuzz_run.py runs them): a random program
(tests/compiled_fuzz_gen.py) as the forward of an nn.Module whose leaves are its parameters,
run as `tj.compile(model)` with .backward() into the parameters, and as a compiled training
step (forward, backward, optimizer.step(), zero_grad in one tj.compile) with SGD(momentum) or
AdamW over 3 steps, every value compared with the same torch module run eagerly."""
from __future__ import annotations

import numpy as np
import torch

import tracejit as tj

from compiled_fuzz_gen import THS, TJS, Program, make_value
from compiled_fuzz_run import (Mismatch, _guard, _th, _tj, build, close, leaf_values,
                               loss_weights, outputs_and_backward, values_for, weighted_loss)

ROLES = {"param": 3, "arg": 1.5, "np": 0.5, "scalar": 0.7}


def make_model(prog: Program, side, vals: dict):
    """A module of the program's parameters; its forward runs the program."""
    forward, _ = build(prog, side, {}, module=True)
    base = tj.nn.Module if side is TJS else torch.nn.Module
    model = type("FuzzModel", (base,), {"forward": forward})()
    for lf in prog.leaves:
        if lf.role == "param":
            setattr(model, lf.name, vals[lf.name])
    return model


def params(prog: Program, model) -> list:
    return [(lf.name, getattr(model, lf.name)) for lf in prog.leaves if lf.role == "param"]


def compare_params(prog: Program, mt, mh, what: str, grads: bool = True) -> None:
    for (name, a), (_, b) in zip(params(prog, mt), params(prog, mh)):
        close(a, b, f"parameter {name} {what}")
        if not grads:
            continue
        if (a.grad is None) != (b.grad is None):
            g = b.grad if a.grad is None else a.grad
            if g is None or np.any(g.detach().numpy()):
                raise Mismatch(f"{name}.grad {what}: None {a.grad is None} vs torch "
                               f"{b.grad is None}")
        elif a.grad is not None:
            close(a.grad, b.grad, f"{name}.grad {what}")


def run_module(seed: int) -> str:
    prog = Program(seed, ROLES, dtype=[np.float32, np.float64][seed % 2])
    return _guard(prog, lambda: (_module_phases(prog), _train_phases(prog)))


def _module_phases(prog: Program) -> None:
    rng = np.random.default_rng(prog.seed + 15485863)
    first = {lf.name: lf.array for lf in prog.leaves}
    vt, vh = values_for(prog, first, TJS), values_for(prog, first, THS)
    mt, mh = make_model(prog, TJS, vt), make_model(prog, THS, vh)
    cm = _tj("tj.compile(model)", lambda: tj.compile(mt))
    for phase in ("first call", "cache hit"):
        if phase == "cache hit":            # new inputs; parameters changed in place
            new = leaf_values(prog, TJS, rng)
            for lf in prog.leaves:
                if lf.role == "param":
                    with tj.no_grad():
                        vt[lf.name].copy_(tj.tensor(new[lf.name]))
                    with torch.no_grad():
                        vh[lf.name].copy_(torch.tensor(new[lf.name]))
                else:
                    vt[lf.name] = make_value(lf, new[lf.name], TJS)
                    vh[lf.name] = make_value(lf, new[lf.name], THS)
        outputs_and_backward(prog, mh, cm, vh, vt, f"compiled model ({phase})", rng)
        compare_params(prog, mt, mh, f"after the model's {phase} and backward")


def _train_phases(prog: Program) -> None:
    rng = np.random.default_rng(prog.seed + 32452843)
    first = {lf.name: lf.array for lf in prog.leaves}
    vt, vh = values_for(prog, first, TJS), values_for(prog, first, THS)
    mt, mh = make_model(prog, TJS, vt), make_model(prog, THS, vh)

    def inputs(new: dict, side) -> list:
        # (inputs without grad: backward inside a compiled step fills captures' .grad only)
        vals = [make_value(lf, new[lf.name], side) for lf in prog.leaves
                if lf.role in ("arg", "np", "scalar")]
        return [v.detach() if hasattr(v, "detach") else v for v in vals]
    probe = make_model(prog, THS, values_for(prog, first, THS))   # (its forward may write)
    outs = _th(lambda: probe(*inputs(first, THS)))
    ws = loss_weights(prog, outs, rng)
    if not any(w is not None for w in ws) or not params(prog, mh):
        return
    adamw = prog.dtype == np.float64 and rng.random() < 0.5
    if adamw:
        kw = dict(lr=0.01, betas=(0.9, 0.99), weight_decay=float(rng.choice([0.0, 0.1])))
        ot = tj.optim.AdamW(mt.parameters(), **kw)
        oh = torch.optim.AdamW(mh.parameters(), **kw)
    else:
        kw = dict(lr=0.05, momentum=float(rng.choice([0.0, 0.9])),
                  weight_decay=float(rng.choice([0.0, 0.01])))
        kw["nesterov"] = bool(kw["momentum"] and rng.random() < 0.5)
        ot = tj.optim.SGD(mt.parameters(), **kw)
        oh = torch.optim.SGD(mh.parameters(), **kw)

    def step(L, model, opt, *args):
        loss = weighted_loss(L, model(*args), ws)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss
    st = _tj("tj.compile(step)", lambda: tj.compile(lambda *a: step(tj, mt, ot, *a)))
    what = f"{type(ot).__name__}({kw})"
    for k in range(3):
        new = first if k == 0 else leaf_values(prog, TJS, rng)
        at, ah = inputs(new, TJS), inputs(new, THS)
        lh = _th(lambda: step(torch, mh, oh, *ah))
        lt = _tj(f"compiled {what} step {k}", lambda: st(*at))
        close(lt, lh, f"loss of {what} step {k}")
        compare_params(prog, mt, mh, f"after {what} step {k}")
