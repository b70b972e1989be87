"""Tensor.normal_/uniform_/bernoulli_: in-place random fills as torch's (HF/nanoGPT-style
`module.weight.data.normal_(mean=0.0, std=0.02)`)."""
import numpy as np
import pytest

import tracejit as tj
from conftest import assert_close


def test_fills_moments_and_identity():
    x = tj.zeros(400, 300)
    assert x.normal_(mean=1.0, std=0.5) is x
    a = x.numpy()
    assert abs(a.mean() - 1.0) < 0.01 and abs(a.std() - 0.5) < 0.01
    assert x.uniform_(-2.0, 3.0) is x
    a = x.numpy()
    assert a.min() >= -2.0 and a.max() < 3.0 and abs(a.mean() - 0.5) < 0.03
    x.uniform_(**{"from": 4.0, "to": 5.0})
    assert 4.0 <= x.numpy().min() and x.numpy().max() < 5.0
    x.bernoulli_(0.25)
    assert set(np.unique(x.numpy())) == {0.0, 1.0} and abs(x.numpy().mean() - 0.25) < 0.01
    d = tj.zeros(5, dtype=tj.float64).normal_()
    assert d.dtype is tj.float64 and d.numpy().std() > 0
    h = tj.zeros(1000, dtype=tj.bfloat16).normal_()
    assert h.dtype is tj.bfloat16 and 0.8 < float(h.float().numpy().std()) < 1.2


def test_fills_are_seeded_and_take_a_generator():
    tj.manual_seed(3)
    a = tj.zeros(6).normal_().numpy().copy()
    tj.manual_seed(3)
    assert (tj.zeros(6).normal_().numpy() == a).all()
    g = tj.Generator(tj.device("cpu"), 9)
    b = tj.zeros(6).uniform_(generator=g).numpy().copy()
    g.manual_seed(9)
    assert (tj.zeros(6).uniform_(generator=g).numpy() == b).all()


def test_fills_follow_in_place_rules():
    p = tj.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        p.normal_()
    p.data.normal_()                        # through .data: the same storage, no autograd
    assert p.detach().numpy().std() > 0 and p.requires_grad and p.grad_fn is None
    with tj.no_grad():
        p.uniform_(0.0, 1e-3)
    assert p.detach().numpy().max() < 1e-3
    with pytest.raises(TypeError, match="normal_: needs a floating-point tensor"):
        tj.zeros(3, dtype=tj.int64).normal_()
    with pytest.raises(ValueError, match="std >= 0.0"):
        tj.zeros(3).normal_(0.0, -1.0)


def test_fill_inside_a_compiled_function():
    def f(x):
        y = tj.zeros_like(x)
        y.uniform_(2.0, 3.0)
        return x + y
    out = tj.compile(f)(tj.zeros(100)).numpy()
    assert out.min() >= 2.0 and out.max() < 3.0
    assert_close(tj.compile(lambda x: tj.zeros_like(x).bernoulli_(1.0) + x)(tj.ones(3)),
                 [2.0, 2.0, 2.0])
