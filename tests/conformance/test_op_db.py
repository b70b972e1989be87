"""PyTorch's OpInfo samples run through every tracejit op that has a torch counterpart
(op_table.TABLE): forward values eagerly, gradients (eager backward against torch autograd),
and the compiled forward and backward of the first samples, for float32, float64 and int64,
with NaN and inf positions matching. One test per op, so a failure names it; each failure
message lists every failing dtype x sample x stage."""
from __future__ import annotations

import os

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")      # torch.testing._internal imports it
from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

from conformance.op_table import TABLE  # noqa: E402

OPINFOS = {o.name + (f".{o.variant_test_name}" if o.variant_test_name else ""): o for o in op_db}
DTYPES = (torch.float32, torch.float64, torch.int64, torch.bool)
COMPILED_SAMPLES = 1           # per op and dtype; plus one sample with an empty tensor per op
REFERENCE_DTYPES = (torch.float32,)
REFERENCE_PLAIN = 12           # reference samples per op without NaN, inf or empty tensors
# by the dtype of the result (an op on int64 inputs may give float32)
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-7, atol=1e-7)}
GRAD_TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-7, atol=1e-7)}


def _tol(table, want) -> dict:
    return table.get(want.dtype, {}) if isinstance(want, torch.Tensor) else {}


# -- moving a sample between the libraries ------------------------------------------------------
def _map(x, f):
    if isinstance(x, torch.Size):      # sizes (split_with_sizes' argument) hold no tensors
        return x
    if isinstance(x, (list, tuple)):
        return type(x)(_map(v, f) for v in x)
    if isinstance(x, dict):
        return {k: _map(v, f) for k, v in x.items()}
    return f(x)


def _leaves(x) -> list:
    out = []
    _map(x, lambda v: out.append(v) if isinstance(v, torch.Tensor) else None)
    return out


def _to_tj(x):
    if isinstance(x, torch.Tensor):
        return tj.tensor(x.detach().numpy().copy(), requires_grad=x.requires_grad)
    if isinstance(x, torch.dtype):
        return {torch.float32: tj.float32, torch.float64: tj.float64,
                torch.int64: tj.int64, torch.bool: tj.bool_}[x]
    return x


def _outputs(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _describe(sample) -> str:
    def d(x):
        if isinstance(x, torch.Tensor):
            return f"{str(x.dtype)[6:]}{list(x.shape)}"
        if isinstance(x, (list, tuple)):
            return "(" + ", ".join(d(v) for v in x) + ")"
        return repr(x)
    kw = ", ".join(f"{k}={d(v)}" for k, v in sample.kwargs.items())
    return f"{d(sample.input)}, args={d(sample.args)}" + (f", {kw}" if kw else "")


# -- comparisons --------------------------------------------------------------------------------
def _check_values(got, want, tol) -> None:
    if isinstance(want, torch.Tensor) and want.dtype is torch.bfloat16:
        # torch has no NumPy bfloat16: compare the (exactly representable) float32 values
        assert isinstance(got, tj.Tensor) and got.dtype is tj.bfloat16, \
            f"dtype {getattr(got, 'dtype', type(got))} != torch's bfloat16"
        got, want = got.float(), want.float()
    g = got.detach().numpy() if isinstance(got, tj.Tensor) else np.asarray(got)
    w = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert g.shape == w.shape, f"shape {g.shape} != torch's {w.shape}"
    assert g.dtype == w.dtype, f"dtype {g.dtype} != torch's {w.dtype}"
    if w.dtype.kind in "biu":
        np.testing.assert_array_equal(g, w)
    else:
        np.testing.assert_allclose(g, w, equal_nan=True, **tol)


def _cotangents(outs) -> list[np.ndarray]:
    """The same float32 values for both libraries (each casts them to its result's dtype)."""
    rng = np.random.default_rng(0)
    return [rng.standard_normal(tuple(o.shape)).astype(np.float32) for o in outs]


def _torch_grads(outs, inputs):
    diff = [(o, c) for o, c in zip(outs, _cotangents(outs)) if o.requires_grad]
    if not diff or not inputs:
        return None
    return torch.autograd.grad([o for o, _ in diff], inputs,
                               [torch.tensor(c).to(o.dtype) for o, c in diff],
                               allow_unused=True)


def _check_grads(tj_outs, tj_inputs, want) -> None:
    outs = [o for o in tj_outs if o.requires_grad]
    cots = [tj.tensor(c).astype(o.dtype) for o, c in zip(tj_outs, _cotangents(tj_outs))
            if o.requires_grad]
    assert outs, "the result does not require grad, torch's does"
    got = tj.autograd.grad(outs, tj_inputs, cots, allow_unused=True)
    for i, (g, w) in enumerate(zip(got, want)):
        if w is None:
            assert g is None or not np.any(g.numpy()), f"gradient {i}: torch has none"
            continue
        if g is None:
            g = tj.zeros_like(tj_inputs[i])
        try:
            _check_values(g, w, _tol(GRAD_TOL, w))
        except AssertionError as e:
            raise AssertionError(f"gradient {i}: {e}") from None


# -- one sample ---------------------------------------------------------------------------------
def _run_sample(entry, opinfo, sample, dtype, compiled: bool) -> list[str]:
    """The failures of one sample as '<stage>: <message>' strings."""
    failures = []
    # torch runs on fresh leaf copies: some reference samples hold tensors whose autograd edge
    # is cut (torch then reports no gradient for an identity such as a 0-d permute)
    t_args = _map((sample.input, sample.args, sample.kwargs), lambda v: v.detach().clone()
                  .requires_grad_(v.requires_grad) if isinstance(v, torch.Tensor) else v)
    want = _outputs(opinfo.op(t_args[0], *t_args[1], **t_args[2]))
    t_inputs = [t for t in _leaves(t_args) if t.requires_grad]
    diff = entry.grad and dtype.is_floating_point and opinfo.supports_autograd
    try:
        want_grads = _torch_grads(want, t_inputs) if diff else None
    except RuntimeError as e:      # torch has no derivative for it (5 % x w.r.t. x): no oracle
        if "not implemented" not in str(e):
            raise
        want_grads = None

    def stage(name, check):
        try:
            check()
        except Exception as e:        # noqa: BLE001  (every way of failing is reported)
            msg = str(e).strip().replace("\n", " ")
            failures.append(f"{name}: {type(e).__name__}: {msg[:400]}")

    # eager: the torch sample's tensors become tracejit tensors, in the same structure
    tj_args = _map(t_args, _to_tj)
    leaves = [t for t in _leaves_tj(tj_args) if t.requires_grad]

    def eager():
        got = _outputs(entry.fn(tj_args[0], *tj_args[1], **tj_args[2]))
        assert len(got) == len(want), f"{len(got)} results, torch has {len(want)}"
        for g, w in zip(got, want):
            _check_values(g, w, _tol(TOL, w))
        if want_grads is not None:
            _check_grads(got, leaves, want_grads)
    stage("eager", eager)
    reason = entry.not_compilable(sample)
    if not compiled or reason:
        return failures

    # compiled: the tensors are the arguments, everything else is baked into the trace
    tensors = _leaves_tj(tj_args)

    def rebuild(*vals):
        it = iter(vals)
        return _map(tj_args, lambda v: next(it) if isinstance(v, tj.Tensor) else v)

    def body(*vals):
        x, args, kwargs = rebuild(*vals)
        out = entry.fn(x, *args, **kwargs)
        return tuple(out) if isinstance(out, (tuple, list)) else out

    fn = tj.compile(body)

    def compiled():
        # with inputs that require grad, one call checks the forward values and the backward
        # kernels (the compiled function inside eager autograd); otherwise the plain forward
        fresh = [tj.tensor(t.detach().numpy(), requires_grad=t.requires_grad) for t in tensors]
        with tj.set_grad_enabled(want_grads is not None):
            got = _outputs(fn(*fresh))
        for g, w in zip(got, want):
            _check_values(g, w, _tol(TOL, w))
        if want_grads is not None:
            _check_grads(got, [t for t in fresh if t.requires_grad], want_grads)
    stage("compiled", compiled)
    return failures


def _leaves_tj(x) -> list:
    out = []
    _map(x, lambda v: out.append(v) if isinstance(v, tj.Tensor) else None)
    return out


def _has_nonfinite(sample) -> bool:
    return any(not np.isfinite(t.detach().numpy()).all()
               for t in _leaves((sample.input, sample.args, sample.kwargs)))


def _has_empty(sample) -> bool:
    return any(t.numel() == 0 for t in _leaves((sample.input, sample.args, sample.kwargs)))


def _samples(opinfo, dtype, grad: bool) -> list[tuple[str, object]]:
    """('sample i', s) for the OpInfo's sample inputs and, for float32, ('reference i', s) for
    some of its reference inputs too (those with extremal values: NaN, inf, empty tensors; and
    the first few others)."""
    # the generators themselves, seeded once: OpInfo.sample_inputs wraps them in an iterator
    # that reseeds and records a traceback per sample, a third of this test's time
    torch.manual_seed(0)
    out = [(f"sample {i}", s) for i, s in
           enumerate(opinfo.sample_inputs_func(opinfo, "cpu", dtype, grad))]
    if dtype in REFERENCE_DTYPES and opinfo.reference_inputs_func is not None:
        try:
            refs = list(opinfo.reference_inputs_func(opinfo, "cpu", dtype, grad))
        except ValueError:   # torch's own generators for where/clamp ask for int tensors w/ grad
            refs = list(opinfo.reference_inputs_func(opinfo, "cpu", dtype, False))
        plain = 0
        for i, s in enumerate(refs):
            # every reference sample with a NaN, an inf or an empty tensor, the first few others
            special = _has_empty(s) or _has_nonfinite(s)
            if special or plain < REFERENCE_PLAIN:
                out.append((f"reference {i}", s))
                plain += not special
    return out


def run_op(name: str) -> tuple[int, list[str]]:
    """(number of samples checked, failures) for one op over every dtype."""
    entry, opinfo = TABLE[name], OPINFOS[name]
    checked, failures = 0, []
    # an empty tensor's kernels are the same loops whatever the dtype: compiled once per op
    # (in its first dtype, float32 where it has one; LLVM compiles are most of this test's time)
    empty_done = False
    for dtype in DTYPES:
        if dtype not in opinfo.dtypes or (not dtype.is_floating_point and not entry.int_ok):
            continue
        grad = dtype.is_floating_point and opinfo.supports_autograd
        n_compiled, nonfinite_done = 0, False
        for label, sample in _samples(opinfo, dtype, grad):
            if entry.unsupported(sample):
                continue
            # compiled: the first samples, the first with an empty tensor and the first
            # reference sample with NaN or inf (generated code must place them as torch does)
            if label.startswith("sample"):
                compiled = n_compiled < COMPILED_SAMPLES or (not empty_done and _has_empty(sample))
                n_compiled += compiled
                empty_done |= compiled and _has_empty(sample)
            else:
                compiled = not nonfinite_done and _has_nonfinite(sample)
                nonfinite_done |= compiled
            checked += 1
            for f in _run_sample(entry, opinfo, sample, dtype, compiled):
                failures.append(f"{name} {str(dtype)[6:]} {label} ({_describe(sample)}) {f}")
    return checked, failures


@pytest.mark.parametrize("name", sorted(TABLE))
def test_op_matches_torch(name):
    checked, failures = run_op(name)
    assert checked, f"{name}: no sample was checked"
    report = os.environ.get("TRACEJIT_CONFORMANCE_REPORT")
    if report and failures:
        with open(report, "a") as f:
            f.write("\n".join(failures) + "\n")
    assert not failures, f"{len(failures)} of {name}'s checks differ from torch:\n" + \
        "\n".join(failures)
