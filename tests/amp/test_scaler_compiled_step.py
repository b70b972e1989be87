"""A whole AMP training step (autocast + GradScaler + tj.optim) under tj.compile: one trace, and
the same parameters, optimizer state, scale and growth tracker as the eager step and as torch,
through skipped steps (inf/NaN gradients: scale backed off, optimizer state untouched) and
growth after growth_interval good steps."""
import numpy as np
import pytest
import torch

import tracejit as tj

BAD = {2, 3, 7}          # steps whose input holds an inf or a NaN
STEPS = 11


def _data(step):
    rs = np.random.RandomState(step)
    x = rs.randn(6, 5).astype(np.float32)
    y = rs.randn(6, 3).astype(np.float32)
    if step in BAD:
        x[step % 6, 1] = np.inf if step % 2 else np.nan
    return x, y


def _weights():
    rs = np.random.RandomState(42)
    return [rs.randn(8, 5).astype(np.float32) * 0.3, rs.randn(8).astype(np.float32) * 0.1,
            rs.randn(3, 8).astype(np.float32) * 0.3, rs.randn(3).astype(np.float32) * 0.1]


def _forward(lib, p, x):
    h = lib.nn.functional.linear(x, p[0], p[1]).relu()
    return lib.nn.functional.linear(h, p[2], p[3])


def _make_opt(lib, params, kind):
    if kind == "adamw":
        return lib.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    return lib.optim.SGD(params, lr=5e-2, momentum=0.9)


def _run_torch(kind, dtype):
    p = [torch.tensor(w, requires_grad=True) for w in _weights()]
    opt = _make_opt(torch, p, kind)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=3)
    scales = []
    for step in range(STEPS):
        x, y = (torch.tensor(a) for a in _data(step))
        opt.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            out = _forward(torch, p, x)
        loss = ((out.float() - y) ** 2).mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        scales.append((scaler.get_scale(), scaler._get_growth_tracker()))
    return [t.detach().numpy() for t in p], scales, opt


def _run_tj(kind, dtype, compiled):
    p = [tj.tensor(w, requires_grad=True) for w in _weights()]
    opt = _make_opt(tj, p, kind)
    scaler = tj.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=3)

    def train_step(x, y):
        opt.zero_grad()
        with tj.autocast("cpu", dtype=dtype):
            out = _forward(tj, p, x)
        loss = ((out.float() - y) ** 2).mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    fn = tj.compile(train_step) if compiled else train_step
    scales = []
    for step in range(STEPS):
        x, y = (tj.tensor(a) for a in _data(step))
        before = [t.detach().numpy().copy() for t in p]
        fn(x, y)
        scales.append((scaler.get_scale(), scaler._get_growth_tracker()))
        if step in BAD:           # a skipped step leaves every parameter as it was
            for b, t in zip(before, p):
                np.testing.assert_array_equal(t.detach().numpy(), b)
    return [t.detach().numpy() for t in p], scales, opt, fn


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_compiled_amp_step_matches_eager_and_torch(kind, dtype):
    tdt = torch.bfloat16 if dtype == "bf16" else torch.float16
    jdt = tj.bfloat16 if dtype == "bf16" else tj.float16
    want, want_scales, topt = _run_torch(kind, tdt)
    eager, eager_scales, _, _ = _run_tj(kind, jdt, compiled=False)
    got, got_scales, opt, fn = _run_tj(kind, jdt, compiled=True)
    # skipped steps back off, three good ones in a row grow the scale
    assert want_scales[2][0] == want_scales[1][0] * 0.5
    assert any(b[0] == 2 * a[0] for a, b in zip(want_scales, want_scales[1:]))
    assert got_scales == eager_scales == want_scales
    for g, e, w in zip(got, eager, want):
        # (compiled and eager low-precision matmuls round differently: not the scaler's part;
        # the float32 test below compares them to 1e-6)
        np.testing.assert_allclose(g, e, rtol=2e-3, atol=1.5e-3)
        np.testing.assert_allclose(g, w, rtol=2e-2, atol=2e-3)
        assert np.isfinite(g).all()
    if kind == "adamw":       # skipped steps are not counted
        steps = {float(s["step"].item()) for s in opt.state.values()}
        assert steps == {float(STEPS - len(BAD))}
        assert steps == {float(s["step"]) for s in topt.state.values()}
    # one trace (SGD's first step creates the momentum buffer: two)
    assert fn.cache_info().misses == (1 if kind == "adamw" else 2)


def test_compiled_step_with_unscale_and_clip_matches_eager():
    def run(compiled):
        p = [tj.tensor(w, requires_grad=True) for w in _weights()]
        opt = tj.optim.AdamW(p, lr=1e-2)
        scaler = tj.amp.GradScaler("cpu", init_scale=2.0 ** 20, growth_interval=2)
        norms = []

        def train_step(x, y):
            opt.zero_grad()
            loss = ((_forward(tj, p, x) - y) ** 2).mean()
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            n = tj.nn.utils.clip_grad_norm_(p, 1.0)
            scaler.step(opt)
            scaler.update()
            return n

        fn = tj.compile(train_step) if compiled else train_step
        for step in range(8):
            norms.append(float(fn(*(tj.tensor(a) for a in _data(step))).item()))
        return [t.detach().numpy() for t in p], scaler.get_scale(), scaler.state_dict(), norms

    got, eager = run(True), run(False)
    for g, e in zip(got[0], eager[0]):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)
    assert got[1:3] == eager[1:3]
    np.testing.assert_allclose(got[3], eager[3], rtol=1e-6)


def test_compiled_scaler_step_needs_a_tj_optimizer():
    class Plain:
        def __init__(self, params):
            self.param_groups = [{"params": params}]

        def step(self):
            pass

    p = tj.tensor(np.ones(3, np.float32), requires_grad=True)
    opt = Plain([p])
    scaler = tj.amp.GradScaler("cpu")

    @tj.compile
    def train_step(x):
        scaler.scale((p * x).sum()).backward()
        scaler.step(opt)

    with pytest.raises(TypeError, match=r"GradScaler\.step inside a compiled function.*Plain"):
        train_step(tj.tensor(np.ones(3, np.float32)))
