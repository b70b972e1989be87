"""tj.amp.GradScaler against torch.amp.GradScaler('cpu'): the scale sequence (backoff after an
inf/NaN gradient, growth after growth_interval good steps), skipped steps, unscaled gradients,
state_dict, the protocol errors; with a bare optimizer and with tj.optim.SGD."""
import warnings

import numpy as np
import pytest
import torch

import tracejit as tj


class _FakeOpt:
    """The least an optimizer needs for GradScaler: param_groups and step()."""

    def __init__(self, params):
        self.param_groups = [{"params": list(params)}]
        self.steps = 0

    def step(self):
        self.steps += 1
        return "stepped"


def _grads(rs, step, bad_steps):
    g = [rs.randn(3, 2).astype(np.float32), rs.randn(4).astype(np.float32)]
    if step in bad_steps:
        g[step % 2].flat[1] = np.inf if step % 3 else np.nan
    return g


@pytest.mark.parametrize("kw", [dict(init_scale=2.0 ** 16, growth_interval=3),
                                dict(init_scale=1000.0, growth_factor=3.0, backoff_factor=0.3,
                                     growth_interval=2),
                                dict(init_scale=3.0e38, growth_interval=1)])   # growth to inf
def test_scale_sequence_and_skips_match_torch(kw):
    rs = np.random.RandomState(0)
    bad = {1, 2, 6, 11}
    tps = [torch.zeros(3, 2, requires_grad=True), torch.zeros(4, requires_grad=True)]
    ps = [tj.zeros(3, 2, requires_grad=True), tj.zeros(4, requires_grad=True)]
    topt, opt = _FakeOpt(tps), _FakeOpt(ps)
    ts, s = torch.amp.GradScaler("cpu", **kw), tj.amp.GradScaler("cpu", **kw)
    for step in range(14):
        loss_t = ts.scale(torch.tensor(2.0))
        loss = s.scale(tj.tensor(2.0))
        assert loss.item() == loss_t.item()
        for p, tp, g in zip(ps, tps, _grads(rs, step, bad)):
            # the gradients backward would give for the scaled loss
            tp.grad = torch.from_numpy(g) * ts.get_scale()
            p.grad = tj.tensor(g) * s.get_scale()
        out_t, out = ts.step(topt), s.step(opt)
        assert out == out_t and opt.steps == topt.steps
        for p, tp in zip(ps, tps):
            np.testing.assert_array_equal(p.grad.numpy(), tp.grad.numpy())
        ts.update()
        s.update()
        assert s.get_scale() == ts.get_scale(), step
        assert s.state_dict() == ts.state_dict()
    assert 0 < topt.steps <= 14 - len(bad)    # (a huge scale overflows good steps too)


def test_with_sgd_params_match_torch():
    rs = np.random.RandomState(1)
    w0 = rs.randn(5, 3).astype(np.float32)
    x = rs.randn(8, 5).astype(np.float32)
    tw = torch.tensor(w0, requires_grad=True)
    w = tj.nn.Parameter(tj.tensor(w0))
    topt = torch.optim.SGD([tw], lr=1e-4, momentum=0.9)
    opt = tj.optim.SGD([w], lr=1e-4, momentum=0.9)
    ts = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127, growth_interval=2)
    s = tj.amp.GradScaler("cpu", init_scale=2.0 ** 127, growth_interval=2)
    scales = []
    for _ in range(8):
        topt.zero_grad()
        opt.zero_grad()
        ts.scale(((torch.from_numpy(x) @ tw) ** 2).sum() * 100).backward()
        s.scale(((tj.tensor(x) @ w) ** 2).sum() * 100).backward()
        ts.unscale_(topt)                      # e.g. to clip: both unscale first
        s.unscale_(opt)
        ts.step(topt)
        s.step(opt)
        ts.update()
        s.update()
        assert s.get_scale() == ts.get_scale()
        scales.append(s.get_scale())
        np.testing.assert_allclose(w.detach().numpy(), tw.detach().numpy(), rtol=1e-5,
                                   atol=1e-6)
    # the first steps overflowed (2**127 * loss is inf in float32) and were skipped
    assert min(scales) < 2.0 ** 127


def test_protocol_errors_and_state_dict():
    p = tj.zeros(2, requires_grad=True)
    opt = _FakeOpt([p])
    s = tj.amp.GradScaler("cpu", growth_interval=5)
    with pytest.raises(AssertionError, match="scale"):
        s.step(opt)
    s.scale(tj.tensor(1.0))
    p.grad = tj.ones(2)
    s.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        s.unscale_(opt)
    s.step(opt)
    with pytest.raises(RuntimeError, match="after step"):
        s.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called since the last update"):
        s.step(opt)
    s.update()
    p.grad = tj.ones(2, dtype=tj.float16)
    s.scale(tj.tensor(1.0))
    with pytest.raises(ValueError, match="FP16"):
        s.step(opt)
    s2 = tj.amp.GradScaler("cpu")
    s2.load_state_dict(s.state_dict())
    assert s2.state_dict() == s.state_dict()
    s.update(new_scale=7.0)
    assert s.get_scale() == 7.0
    with pytest.raises(AssertionError):
        tj.amp.GradScaler("cpu", growth_factor=0.5)
    # scale keeps the output's dtype, lists and tuples too
    out = s.scale([tj.ones(2, dtype=tj.bfloat16), (tj.ones(1),)])
    assert out[0].dtype is tj.bfloat16 and isinstance(out[1], tuple)
    assert out[1][0].item() == 7.0


def test_disabled_scaler_passes_through():
    s = tj.amp.GradScaler("cpu", enabled=False)
    t = tj.ones(2)
    assert s.scale(t) is t and s.get_scale() == 1.0 and s.state_dict() == {}
    opt = _FakeOpt([])
    assert s.step(opt) == "stepped"
    s.update()
    if not tj.cuda_available():
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            c = tj.amp.GradScaler()                       # device="cuda" by default
        assert not c.is_enabled() and "CUDA is not available" in str(w[0].message)


def test_scale_inside_a_compiled_function_reads_the_current_scale():
    s = tj.amp.GradScaler("cpu", init_scale=8.0)

    @tj.compile
    def scaled_loss(x):
        return s.scale((x * x).sum())

    x = tj.ones(3)
    assert scaled_loss(x).item() == 24.0
    p = tj.zeros(1, requires_grad=True)
    opt = _FakeOpt([p])
    p.grad = tj.tensor([np.inf])
    s.step(opt)
    s.update()                                   # backoff: 8 -> 4
    assert s.get_scale() == 4.0
    assert scaled_loss(x).item() == 12.0         # not the 8 seen when it was traced
    assert scaled_loss(x.bfloat16()).dtype is tj.bfloat16
