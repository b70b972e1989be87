"""The COMPILED-vs-torch tester: random programs (tests/compiled_fuzz_gen.py) run by tracejit
inside `tj.compile` and eagerly by torch, every value, in-place write and gradient compared.

    run_compiled(seed)  a compiled function of Tensor / NumPy / Python-scalar arguments and
                        captured globals (with and without grad): a first call and .backward()
                        through it, a second call with new values of the same shapes (the cache
                        hit: captures changed in place under no_grad, .grad accumulating), a
                        call under no_grad, a call in the other float dtype (a retrace, the
                        captures rebound to new tensors)
    run_grad(seed)      tj.grad / tj.value_and_grad of a plain and of a compiled function and a
                        compiled tj.grad, each called twice
    run_module(seed)    tj.compile(module) forward and backward into the parameters, then a
                        compiled training step (forward, backward, optimizer.step(), zero_grad
                        inside one tj.compile) with SGD(momentum) or AdamW over 3 steps

torch is the reference, run eagerly with saved tensors copied when saved (torch.compile's
functional semantics: an in-place op after a value was saved does not change its gradient).
A run returns "ok", or "refused: <message>" when tracejit raised a clear error (RuntimeError,
ValueError, TypeError, NotImplementedError) where torch ran; anything else raises `Mismatch`
naming the seed and the program. Thousands of seeds by hand:
`python tests/compiled_fuzz_run.py 0 2000` (a tally of outcomes and refusals)."""
from __future__ import annotations

import sys
import warnings

import numpy as np
import torch

import tracejit as tj

from compiled_fuzz_gen import THS, TJS, Program, make_value
from eager_fuzz_gen import Mismatch, close, npv

CLEAR = (RuntimeError, ValueError, TypeError, NotImplementedError)


class Refused(Exception):
    pass


def _saving_copies():
    return torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t)


def build(prog: Program, side, caps: dict, result: str = "outputs", module: bool = False):
    """The program as a Python function (or a module's forward) of its argument leaves,
    reading its captures as globals, or for a third of the seeds as closure variables;
    returns (function, its captures: a dict or a `Cells`, to read, update and rebind)."""
    params = [lf.name for lf in prog.leaves if lf.role in ("arg", "np", "scalar")]
    env = [f"self.{lf.name}" if lf.role == "param" else lf.name for lf in prog.leaves]
    head = ", ".join((["self"] if module else []) + params)
    closure = bool(caps) and prog.seed % 3 == 1
    pad = "    " if closure else ""
    src = (f"{pad}def body({head}):\n"
           f"{pad}    env = _replay(_side, [{', '.join(env)}])\n"
           f"{pad}    return _result(_side, env)\n")
    if closure:
        src = f"def outer({', '.join(caps)}):\n{src}    return body\n"
    outs = prog.outputs()
    if result == "outputs":
        res = lambda s, env: tuple(env[k] for k in outs)   # noqa: E731
    else:
        res = result
    g = {"_replay": prog.replay, "_side": side, "_result": res, "__name__": "fuzzbody"}
    if not closure:
        g.update(caps)
    exec(compile(src, f"<compiled fuzz {prog.seed}>", "exec"), g)
    if not closure:
        return g["body"], g
    body = g["outer"](*caps.values())
    return body, Cells(body)


class Cells:
    """A closure's captured variables by name, as a dict of its globals would be."""

    def __init__(self, fn) -> None:
        self.cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))

    def __getitem__(self, name: str):
        return self.cells[name].cell_contents

    def __setitem__(self, name: str, value) -> None:
        self.cells[name].cell_contents = value

    def update(self, values: dict) -> None:
        for k, v in values.items():
            self[k] = v


def leaf_values(prog: Program, side, rng, dtype=None) -> dict:
    """New values for every leaf (the same numbers on both sides for the same rng state)."""
    vals = {}
    for lf in prog.leaves:
        if lf.role == "scalar":
            vals[lf.name] = float(rng.integers(-3, 4)) + 0.25
            continue
        a = prog.array(lf.array.shape, rng)
        if dtype is not None:
            a = a.astype(dtype)
        vals[lf.name] = a
    return vals


def values_for(prog: Program, arrays: dict, side) -> dict:
    return {lf.name: make_value(lf, arrays[lf.name], side) for lf in prog.leaves}


def call_args(prog: Program, vals: dict) -> list:
    return [vals[lf.name] for lf in prog.leaves if lf.role in ("arg", "np", "scalar")]


def caps_of(prog: Program, vals: dict) -> dict:
    return {lf.name: vals[lf.name] for lf in prog.leaves if lf.role == "cap"}


def compare_outputs(got, want, what: str, grad_mode: bool = True) -> None:
    if len(got) != len(want):
        raise Mismatch(f"{what}: {len(got)} outputs vs torch {len(want)}")
    for k, (a, b) in enumerate(zip(got, want)):
        if not isinstance(a, tj.Tensor):
            raise Mismatch(f"{what}[{k}]: a {type(a).__name__}, not a Tensor")
        close(a, b, f"{what}[{k}]")
        if not torch.is_grad_enabled() and b.requires_grad:
            continue        # (torch: under no_grad, an input returned itself or a view of
            #                one; a compiled call's outputs are new tensors, see README)
        if grad_mode and bool(a.requires_grad) != bool(b.requires_grad):
            raise Mismatch(f"{what}[{k}]: requires_grad {a.requires_grad} vs torch "
                           f"{b.requires_grad}")


def compare_leaves(prog: Program, got: dict, want: dict, what: str, grads: bool = True) -> None:
    """Leaves after a call: in-place writes into arguments and captures, and their .grad."""
    for lf in prog.leaves:
        if lf.role == "scalar":
            continue
        a, b = got[lf.name], want[lf.name]
        close(a, b, f"{lf.name} {what}")
        if grads and lf.role != "np" and bool(a.requires_grad) != bool(b.requires_grad):
            # (a tensor written with a value that requires grad takes its history)
            raise Mismatch(f"{lf.name} {what}: requires_grad {a.requires_grad} vs torch "
                           f"{b.requires_grad}")
        if not grads or lf.role == "np" or b.grad_fn is not None:
            continue
        ga, gb = a.grad, b.grad
        if (ga is None) != (gb is None):
            if np.any(npv(ga if gb is None else gb)):
                raise Mismatch(f"{lf.name}.grad {what}: None {ga is None} vs torch {gb is None}")
        elif ga is not None:
            close(ga, gb, f"{lf.name}.grad {what}")


def loss_weights(prog: Program, outs_th, rng) -> list:
    """Random weights for up to three outputs that require grad (None: not in the loss)."""
    cand = [k for k, t in enumerate(outs_th) if t.requires_grad and t.dtype.is_floating_point]
    chosen = set(rng.choice(cand, min(3, len(cand)), replace=False).tolist()) if cand else set()
    return [rng.standard_normal(tuple(t.shape)).astype(npv(t).dtype) if k in chosen else None
            for k, t in enumerate(outs_th)]


def weighted_loss(lib, outs, ws):
    total = None
    for o, w in zip(outs, ws):
        if w is not None:
            term = (o * lib.tensor(w)).sum()
            total = term if total is None else total + term
    return total


def _tj(what: str, fn):
    """Run a tracejit step: a clear error is a refusal, anything else a crash."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    except Mismatch:
        raise
    except CLEAR as e:
        raise Refused(f"{what}: {type(e).__name__}: {str(e).splitlines()[0][:160]}") from e
    except Exception as e:          # noqa: BLE001 - a crash is what the tester looks for
        raise Mismatch(f"{what}: tracejit crashed with {type(e).__name__}: {e}") from e


class TorchRefused(Exception):
    """torch raised where tracejit allows by design (a view of a function returning several
    views read after an in-place op on its base): the program is inconclusive."""


def _th(fn, copies: bool = True):
    """torch's result saving copies of saved tensors (what a functional compiled graph
    computes), or, with copies=False, as torch eagerly does (None where torch finds a saved
    tensor changed in place)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if copies:
                with _saving_copies():
                    return fn()
            return fn()
        except RuntimeError as e:
            if "function that returns multiple views" in str(e):
                raise TorchRefused(str(e)) from None
            if copies or "modified by an inplace operation" not in str(e):
                raise
        return None


def _guard(prog: Program, fn) -> str:
    try:
        fn()
        return "ok"
    except TorchRefused:
        return "inconclusive (torch refused a multiple-views write)"
    except Refused as e:
        return f"refused: {e}"
    except Mismatch as e:
        raise Mismatch(f"seed {prog.seed}: {e}\nprogram ({prog.dtype.__name__}):\n  "
                       f"{prog.listing()}") from None


# -- tj.compile of a function ----------------------------------------------------------------

def outputs_and_backward(prog: Program, f_th, f_tj, vh: dict, vt: dict, what: str,
                         rng) -> None:
    """Call torch's f_th and tracejit's f_tj on their values, compare the outputs, and run
    backward of one random weighted loss of them on both sides."""
    outs_th = _th(lambda: f_th(*call_args(prog, vh)))
    outs_tj = _tj(what, lambda: f_tj(*call_args(prog, vt)))
    compare_outputs(outs_tj, outs_th, f"outputs of the {what}")
    ws = loss_weights(prog, outs_th, rng)
    if any(w is not None for w in ws):
        _th(lambda: weighted_loss(torch, outs_th, ws).backward())
        _tj(f"backward of the {what}", lambda: weighted_loss(tj, outs_tj, ws).backward())


def run_compiled(seed: int) -> str:
    prog = Program(seed, {"arg": 4, "np": 1, "cap": 2.5, "scalar": 1})
    return _guard(prog, lambda: _compiled_phases(prog))


def _compiled_phases(prog: Program) -> None:
    rng = np.random.default_rng(prog.seed + 7919)
    first = {lf.name: lf.array for lf in prog.leaves}
    vt, vh = values_for(prog, first, TJS), values_for(prog, first, THS)
    f_tj, g_tj = build(prog, TJS, caps_of(prog, vt))
    f_th, g_th = build(prog, THS, caps_of(prog, vh))
    cf = _tj("tj.compile", lambda: tj.compile(f_tj))
    for phase in ("first call", "cache hit"):
        if phase == "cache hit":
            new = leaf_values(prog, TJS, rng)
            for lf in prog.leaves:              # captures change in place, arguments are new
                if lf.role == "cap" and g_th[lf.name].grad_fn is not None:
                    # (written in place with history by the first call: a new tensor)
                    vt[lf.name] = g_tj[lf.name] = make_value(lf, new[lf.name], TJS)
                    vh[lf.name] = g_th[lf.name] = make_value(lf, new[lf.name], THS)
                elif lf.role == "cap":
                    with tj.no_grad():
                        g_tj[lf.name].copy_(tj.tensor(new[lf.name]))
                    with torch.no_grad():
                        g_th[lf.name].copy_(torch.tensor(new[lf.name]))
                else:
                    vt[lf.name] = make_value(lf, new[lf.name], TJS)
                    vh[lf.name] = make_value(lf, new[lf.name], THS)
        outputs_and_backward(prog, f_th, cf, vh, vt, f"compiled call ({phase})", rng)
        compare_leaves(prog, {**vt, **caps_of(prog, g_tj)}, {**vh, **caps_of(prog, g_th)},
                       f"after the {phase} and backward")
    # under no_grad: the same values, nothing requires grad
    vt2 = values_for(prog, {k: npv(v) if not isinstance(v, float) else v
                            for k, v in vh.items()}, TJS)
    vh2 = values_for(prog, {k: npv(v) if not isinstance(v, float) else v
                            for k, v in vh.items()}, THS)
    with torch.no_grad():
        outs_th = _th(lambda: f_th(*call_args(prog, vh2)))
    with tj.no_grad():
        outs_tj = _tj("compiled call under no_grad", lambda: cf(*call_args(prog, vt2)))
    with torch.no_grad():
        compare_outputs(outs_tj, outs_th, "outputs under no_grad")
    if not prog.float:
        return
    # another float dtype: a retrace; captures rebound to new tensors of that dtype
    other = np.float64 if prog.dtype == np.float32 else np.float32
    new = leaf_values(prog, TJS, rng, other)
    vt3, vh3 = values_for(prog, new, TJS), values_for(prog, new, THS)
    g_tj.update(caps_of(prog, vt3))
    g_th.update(caps_of(prog, vh3))
    outs_th = _th(lambda: f_th(*call_args(prog, vh3)))
    outs_tj = _tj("compiled call (new dtype)", lambda: cf(*call_args(prog, vt3)))
    compare_outputs(outs_tj, outs_th, "outputs (new dtype)")
    ws = loss_weights(prog, outs_th, rng)
    if any(w is not None for w in ws):
        _th(lambda: weighted_loss(torch, outs_th, ws).backward())
        _tj("backward (new dtype)", lambda: weighted_loss(tj, outs_tj, ws).backward())
    compare_leaves(prog, vt3, vh3, "after the new-dtype call and backward")


# -- tj.grad and tj.value_and_grad --------------------------------------------------------------

def run_grad(seed: int) -> str:
    prog = Program(seed, {"arg": 4, "cap": 1.5, "scalar": 1},
                   dtype=[np.float32, np.float64][seed % 2])
    return _guard(prog, lambda: _grad_phases(prog))


def _grad_phases(prog: Program) -> None:
    rng = np.random.default_rng(prog.seed + 104729)
    first = {lf.name: lf.array for lf in prog.leaves}
    vh = values_for(prog, first, THS)
    f_th, _ = build(prog, THS, caps_of(prog, vh))
    outs = _th(lambda: f_th(*call_args(prog, vh)))
    ws = loss_weights(prog, outs, rng)
    if not any(w is not None for w in ws):
        return
    args = [lf for lf in prog.leaves if lf.role in ("arg", "np", "scalar")]
    argnums = tuple(k for k, lf in enumerate(args) if lf.role == "arg" and lf.grad)
    if not argnums:
        return

    def loss(side, env):
        return weighted_loss(side.lib, [env[k] for k in prog.outputs()], ws)
    vt = values_for(prog, first, TJS)
    L_tj, g_tj = build(prog, TJS, caps_of(prog, vt), result=loss)
    L_th, g_th = build(prog, THS, caps_of(prog, vh), result=loss)
    ways = {
        "grad(f)": lambda: tj.grad(L_tj, argnums=argnums),
        "grad(compile(f))": lambda: tj.grad(tj.compile(L_tj), argnums=argnums),
        "compile(grad(f))": lambda: tj.compile(tj.grad(L_tj, argnums=argnums)),
        "value_and_grad(compile(f))": lambda: tj.value_and_grad(tj.compile(L_tj),
                                                                argnums=argnums),
    }
    for way, make in ways.items():
        gf = _tj(way, make)
        for call in range(2):
            new = first if call == 0 else leaf_values(prog, TJS, rng)
            vt = values_for(prog, new, TJS)
            _refill_caps(prog, g_tj, new, TJS)
            def reference():
                vh = values_for(prog, new, THS)
                targs = call_args(prog, vh)
                _refill_caps(prog, g_th, new, THS)
                value = L_th(*targs)
                gs = torch.autograd.grad(value, [targs[k] for k in argnums], allow_unused=True)
                return value, [torch.zeros_like(targs[k]) if g is None else g
                               for k, g in zip(argnums, gs)], targs
            # a plain tj.grad runs the eager engine: where torch finds a saved tensor changed
            # in place, tracejit may raise as well or compute what torch saving copies does
            eager = way == "grad(f)" and _th(reference, copies=False) is None
            value, want, targs = _th(reference)
            if eager:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        gf(*call_args(prog, vt))
                except CLEAR as e:
                    if "modified by an inplace operation" in str(e):
                        continue
                    raise Refused(f"{way} call {call}: {type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:160]}") from e
                vt = values_for(prog, new, TJS)
                _refill_caps(prog, g_tj, new, TJS)
            got = _tj(f"{way} call {call}", lambda: gf(*call_args(prog, vt)))
            if way.startswith("value_and_grad"):
                close(got[0], value, f"{way} call {call}: value")
                got = got[1]
            got = got if isinstance(got, tuple) else (got,)
            for k, (a, b) in enumerate(zip(got, want)):
                close(a, b, f"{way} call {call}: gradient {k} of {argnums}")
            # arguments written in place inside the function are written back
            for lf, a, b in zip(args, call_args(prog, vt), targs):
                if lf.role != "scalar":
                    close(a, b, f"{way} call {call}: argument {lf.name} after the call")


def _refill_caps(prog: Program, g: dict, new: dict, side) -> None:
    """New capture values, in place (a capture a call wrote with history: a new tensor)."""
    lib = side.lib
    for lf in prog.leaves:
        if lf.role != "cap":
            continue
        if g[lf.name].grad_fn is not None:
            g[lf.name] = make_value(lf, new[lf.name], side)
        else:
            with lib.no_grad():
                g[lf.name].copy_(lib.tensor(new[lf.name]))


def main(argv: list[str]) -> None:
    lo, hi = int(argv[1]), int(argv[2])
    kinds = argv[3].split(",") if len(argv) > 3 else ["compiled", "grad", "module"]
    runners = {"compiled": run_compiled, "grad": run_grad}
    try:
        from compiled_fuzz_module import run_module
        runners["module"] = run_module
    except ImportError:
        pass
    tally: dict = {}
    for seed in range(lo, hi):
        for kind in kinds:
            if kind not in runners:
                continue
            try:
                r = runners[kind](seed)
            except Mismatch as e:
                r = "MISMATCH"
                print(f"--- {kind} {e}\n", flush=True)
            if r.startswith("refused"):
                print(f"~~~ {kind} seed {seed}: {r}", flush=True)
            key = f"{kind}: {r}"
            tally[key] = tally.get(key, 0) + 1
    for k, n in sorted(tally.items(), key=lambda kv: -kv[1]):
        print(f"{n:6d}  {k}")


if __name__ == "__main__":
    main(sys.argv)
