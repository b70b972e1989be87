"""Structural kernel keys (codegen/kernel_key.py): build_program renders one kernel per key and
gives the others its code. Checked here: a program built that way is the program built by
rendering every kernel (model programs: nanoGPT, the bench's makemore MLP, LSTM and CNN steps),
the check mode (TRACEJIT_CHECK_KERNEL_KEYS) renders everything and catches a key that misses
something, and kernels that differ only in a constant's bits, a parameter, a dtype or in which
operands alias get different keys and compute what NumPy does."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

import tracejit as tj
from tracejit.codegen import llvm_program
from tracejit.codegen.kernel_key import kernel_key
from nanogpt_helpers import lowered_gpt_step

GENERATED = ("loop", "reduce", "rows", "scatter", "scan")


def _plan(fn, *args):
    return tj.compile(fn).lower(*args)._entry.exe.plan


def _every_kernel_rendered(plan, threads):
    """The program as built by rendering every kernel (no key shares anything)."""
    orig = llvm_program.kernel_key
    llvm_program.kernel_key = lambda k: None
    try:
        return llvm_program.build_program(plan, threads)
    finally:
        llvm_program.kernel_key = orig


def _assert_same_program(plan, threads=2):
    shared = llvm_program.build_program(plan, threads, check_keys=False)
    full = _every_kernel_rendered(plan, threads)
    assert shared.describe() == full.describe()
    assert shared.llvm_text() == full.llvm_text()
    assert shared.memory.offsets == full.memory.offsets
    # and the check mode, which renders every kernel and compares within each key, agrees
    llvm_program.build_program(plan, threads, check_keys=True)
    return shared


def _gpt_plan(layers: int):
    return lowered_gpt_step(f"kernel_key_{layers}", layers, n_head=2, n_embd=32,
                            vocab_size=11, batch=2, block_size=16).plan


def test_a_deep_model_renders_each_distinct_kernel_once(monkeypatch):
    plan = _gpt_plan(4)
    gen = [k for k in plan.kernels if k.kind in GENERATED]
    levels = llvm_program.kernel_levels(plan)
    keys = {(levels[k.name], kernel_key(k)[0]) for k in gen}
    rendered = []
    orig = llvm_program.kernel_codes
    monkeypatch.setattr(llvm_program, "kernel_codes",
                        lambda k, level=None: rendered.append(k.name) or orig(k, level))
    prog = llvm_program.build_program(plan, 1, check_keys=False)
    # (each layer's kernels share the first layer's; the key tells apart a few kernels whose
    # texts agree, such as a sum of a reshaped operand and the same sum of a buffer)
    assert len(rendered) == len(keys) < len(gen)
    assert len(keys) <= len(prog.codes) + 2 and len(prog.calls()) >= len(gen)
    monkeypatch.undo()
    _assert_same_program(plan, 1)


def test_model_programs_are_the_programs_of_every_kernel_rendered():
    _assert_same_program(_gpt_plan(3))


torch = pytest.importorskip("torch")      # bench/model_defs.py builds its models with torch too
_BENCH = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "bench")
_spec = importlib.util.spec_from_file_location("bench_models_kernel_key",
                                               os.path.join(_BENCH, "models.py"))
_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench)
_CPU = {w.name: w for w in _bench.model_defs.workloads("cpu", big=True, tiny=True)}


@pytest.mark.parametrize("name", sorted(_CPU))
def test_bench_training_steps_are_the_programs_of_every_kernel_rendered(name):
    w = _CPU[name]
    step = _bench.build_tj(w, _bench.reference_state(w), "cpu")
    batch = _bench.to_lib(tj, w.data(np.random.default_rng(0)), "cpu")
    _assert_same_program(step.lower(*batch)._entry.exe.plan)


def test_check_mode_catches_a_key_that_misses_something(monkeypatch):
    x = np.ones((64, 8), np.float32)
    plan = _plan(lambda a, b: ((a * 2.0).sum(0), (b * 3.0).sum(0)), x, x)
    real = llvm_program.kernel_key
    # a key blind to constants: the two sums would share the first one's code
    monkeypatch.setattr(llvm_program, "kernel_key",
                        lambda k: (("blind", k.kind, k.shape), real(k)[1]))
    with pytest.raises(RuntimeError, match="structural key of an earlier kernel"):
        llvm_program.build_program(plan, 1, check_keys=True)
    monkeypatch.setenv("TRACEJIT_CHECK_KERNEL_KEYS", "1")
    with pytest.raises(RuntimeError, match="structural key of an earlier kernel"):
        llvm_program.build_program(plan, 1)


def _reduce_keys(plan):
    return [kernel_key(k)[0] for k in plan.kernels if k.kind == "reduce"]


@pytest.mark.parametrize("case", ["constant", "negative zero", "axes", "dtype", "aliasing"])
def test_kernels_that_differ_get_different_keys_and_numpy_results(case):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 8)).astype(np.float32)
    y = rng.standard_normal((16, 8)).astype(np.float32)
    if case == "constant":
        fn = lambda a, b: ((a * 2.0).sum(0), (b * 3.0).sum(0))           # noqa: E731
        want = ((x * 2).sum(0), (y * 3).sum(0))
        args = (x, y)
    elif case == "negative zero":
        # dividing by 0.0 and by -0.0: the zero's sign decides the infinity's
        fn = lambda a, b: ((a * a / 0.0).sum(0), (b * b / -0.0).sum(0))    # noqa: E731
        want = (np.full(8, np.inf, np.float32), np.full(8, -np.inf, np.float32))
        args = (x, y)
    elif case == "axes":
        z = rng.standard_normal((8, 16)).astype(np.float32)
        fn = lambda a, b: ((a * 2.0).sum(0), (b * 2.0).sum(1))           # noqa: E731
        want = ((x * 2).sum(0), (z * 2).sum(1))
        args = (x, z)
    elif case == "dtype":
        y64 = y.astype(np.float64)
        fn = lambda a, b: ((a * 2.0).sum(0), (b * 2.0).sum(0))           # noqa: E731
        want = ((x * 2).sum(0), (y64 * 2).sum(0))
        args = (x, y64)
    else:
        fn = lambda a, b: ((a * a).sum(0), (a * b).sum(0))               # noqa: E731
        want = ((x * x).sum(0), (x * y).sum(0))
        args = (x, y)
    keys = _reduce_keys(_plan(fn, *args))
    assert len(keys) == 2 and keys[0] != keys[1]
    got = tj.compile(fn)(*args)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-5, atol=1e-5)


def test_equal_kernels_share_code_with_their_own_buffers():
    """Two split column sums (a partial-sum kernel and a finishing one, with a scratch buffer
    between them) of one structure: one rendering, two sets of buffers, NumPy's results."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((65536, 4)).astype(np.float32)
    y = rng.standard_normal((65536, 4)).astype(np.float32)

    def fn(a, b):
        return (a * 2.0).sum(0), (b * 2.0).sum(0), (a * 2.0 + b).sum(0)
    plan = _plan(fn, x, y)
    keys = _reduce_keys(plan)
    assert len(keys) == 3 and keys[0] == keys[1] != keys[2]
    prog = _assert_same_program(plan)
    calls = {c.kernel: c for c in prog.calls()}
    a, b = [k.name for k in plan.kernels if k.kind == "reduce"][:2]
    parts = [c for c in prog.calls() if c.kernel in (a, b)]
    assert len(parts) == 4                      # two stages each
    assert calls[a].code is calls[b].code and calls[a].slots != calls[b].slots
    got = tj.compile(fn)(x, y)
    want = ((x.astype(np.float64) * 2).sum(0), (y.astype(np.float64) * 2).sum(0),
            (x.astype(np.float64) * 2 + y).sum(0))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-5, atol=1e-4)


def test_exact_parameters_tell_apart_what_compares_equal():
    from tracejit.ir.exact_params import Inexact, exact_param
    with pytest.raises(Inexact):
        exact_param(object())
    assert exact_param(0.0) != exact_param(-0.0)
    assert len({exact_param(1), exact_param(1.0), exact_param(True)}) == 3
    assert exact_param((1, 2)) != exact_param([1, 2]) != exact_param((1.0, 2))
    nan = np.array([1.0, float("nan")])
    assert exact_param(nan) == exact_param(nan.copy())
    assert exact_param(nan) != exact_param(nan.astype(np.float32))
    assert exact_param(np.arange(100.0)) != exact_param(np.arange(100.0)[::-1])


def test_random_kernels_of_two_streams_do_not_share_code():
    """Two draws of one shape differ only in their stream number (a parameter): two keys, two
    different results, each the reference interpreter's under the same seed."""
    x = np.ones((64, 8), np.float32)

    def fn(a):
        return (a * tj.rand_like(a)).sum(0), (a * tj.rand_like(a)).sum(0)
    keys = _reduce_keys(_plan(fn, x))
    assert len(keys) == 2 and keys[0] != keys[1]
    tj.manual_seed(5)
    got = [g.numpy() for g in tj.compile(fn)(x)]
    tj.manual_seed(5)
    want = [w.numpy() for w in tj.compile(fn, backend="interpreter")(x)]
    assert not np.array_equal(got[0], got[1])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
