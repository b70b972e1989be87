"""Fixes from a code review, each checked against torch: 16-bit gradient norms accumulate in
float32, F.normalize for p = inf/-inf/0, and copying a module after Module.compile()."""
import copy
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tracejit as tj
import tracejit.nn.functional as F
from tracejit import nn
from tracejit.tracer.norms import vector_norm
from conftest import assert_close


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, math.inf])
def test_vector_norm_16bit_accumulates_in_float32(dtype, p):
    # the square of 300 * 4 * 16 overflows float16; torch sums in float32, casts back
    x = np.full((16, 4), 300.0, np.float32)
    ours = vector_norm(tj.tensor(x, dtype=dtype), p)
    theirs = torch.linalg.vector_norm(torch.tensor(x, dtype=getattr(torch, dtype)), p)
    assert str(ours.dtype) in (dtype, {"float16": "f16", "bfloat16": "bf16"}[dtype])
    assert_close(ours, theirs.float().numpy(), 1e-2, 0)


def test_clip_grad_norm_float16_grads_of_300():
    ours = [nn.Parameter(tj.zeros(4, dtype="float16")) for _ in range(4)]
    theirs = [torch.nn.Parameter(torch.zeros(4, dtype=torch.float16)) for _ in range(4)]
    for p, tp in zip(ours, theirs):
        p.grad = tj.full((4,), 300.0, dtype="float16")
        tp.grad = torch.full((4,), 300.0, dtype=torch.float16)
    total = nn.utils.clip_grad_norm_(ours, 1.0)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert ttotal.dtype == torch.float16 and str(total.dtype) in ("f16", "float16")
    assert_close(total, ttotal.float().numpy(), 1e-3, 0)
    for p, tp in zip(ours, theirs):
        assert_close(p.grad, tp.grad.float().numpy(), 1e-3, 0)
        assert float(p.grad.sum()) > 0


@pytest.mark.parametrize("p", [math.inf, -math.inf, 0.0, 1.0, 2.0, 3.0])
def test_normalize_every_p_matches_torch(p):
    x = np.array([[3.0, -4.0, 0.0], [0.0, 0.0, 0.0], [0.5, 2.0, -1.0]], np.float32)
    ours = F.normalize(tj.tensor(x), p=p, dim=1)
    theirs = TF.normalize(torch.tensor(x), p=p, dim=1)
    assert_close(ours, theirs.numpy(), 1e-5, 1e-6)


def test_normalize_grad_matches_torch():
    x = np.array([[3.0, -4.0, 0.0], [0.0, 0.0, 0.0], [0.5, 2.0, -1.0]], np.float32)
    for p in (2.0, math.inf, 3.0):
        a = tj.tensor(x, requires_grad=True)
        F.normalize(a, p=p, dim=1).sum().backward()
        ta = torch.tensor(x, requires_grad=True)
        TF.normalize(ta, p=p, dim=1).sum().backward()
        assert_close(a.grad, ta.grad.numpy(), 1e-5, 1e-6)


def test_deepcopy_and_pickle_of_a_compiled_module():
    m = nn.Linear(3, 2)
    m.compile()
    x = tj.ones(4, 3)
    y = m(x)
    c = copy.deepcopy(m)
    assert_close(c(x), y.detach().numpy(), 1e-6)
    with tj.no_grad():
        c.weight.mul_(0.0)
        c.bias.mul_(0.0)
    assert_close(c(x), np.zeros((4, 2)), 0, 0)        # the copy's call uses the copy's weights
    assert_close(m(x), y.detach().numpy(), 1e-6)       # and the original's is untouched
    q = pickle.loads(pickle.dumps(m))
    assert_close(q(x), y.detach().numpy(), 1e-6)
