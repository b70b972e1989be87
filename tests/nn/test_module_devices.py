"""Modules on a "cuda" device, through the strict CuPy stand-in (tests/fakecupy.py): to(),
cuda(), cpu(), init, eager forward/backward, state_dict round trip and clip_grad_norm_."""
import numpy as np

import fakecupy
import tracejit as tj
from conftest import assert_close
from tracejit import nn


def test_module_moves_to_cuda_and_back(fake_gpu):
    m = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 3))
    x = tj.randn(5, 4)
    ref = m(x).detach().numpy()
    w = m[0].weight
    assert m.cuda() is m and m[0].weight is w
    assert all(p.device == "cuda:0" for p in m.parameters())
    xc = x.to("cuda")
    y = m(xc)
    assert y.device == "cuda:0"
    assert_close(y.cpu(), ref, 1e-5, 1e-6)
    y.sum().backward()
    assert w.grad.device == "cuda:0"
    total = nn.utils.clip_grad_norm_(m.parameters(), 0.1)
    assert total.device == "cuda:0"
    sd = m.state_dict()
    assert all(v.device == "cuda:0" for v in sd.values())
    m2 = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 3)).to("cuda")
    m2.load_state_dict({k: v.cpu().numpy() for k, v in sd.items()})  # host values copied over
    assert all(p.device == "cuda:0" for p in m2.parameters())
    assert_close(m2(xc).cpu(), ref, 1e-5, 1e-6)
    m.cpu()
    assert w.device == "cpu" and w.grad.device == "cpu" and m[0].weight is w
    assert_close(m(x), ref, 1e-5, 1e-6)


def test_layers_built_on_cuda(fake_gpu):
    lin = nn.Linear(3, 2, device="cuda")
    emb = nn.Embedding(6, 3, padding_idx=1, device="cuda")
    assert lin.weight.device == "cuda:0" and emb.weight.device == "cuda:0"
    assert (emb.weight.cpu().detach().numpy()[1] == 0).all()
    out = lin(emb(tj.tensor(np.array([[1, 2]]), device="cuda")))
    assert out.device == "cuda:0" and out.shape == (1, 2, 2)
    nn.init.trunc_normal_(lin.weight, std=0.02)
    assert lin.weight.device == "cuda:0"
    assert np.abs(lin.weight.cpu().detach().numpy()).max() <= 0.04


def test_setitem_of_a_number_on_a_cuda_tensor(fake_gpu):
    # nanoGPT's generate(): logits[logits < v[:, [-1]]] = -float('Inf') on the GPU
    x = tj.tensor(np.array([[1.0, 5.0, 3.0]]), device="cuda")
    with tj.no_grad():
        x[x < 3.0] = -float("inf")
        x[0, 1] = 2.0
    assert x.device == "cuda:0"
    assert_close(x.cpu(), [[-np.inf, 2.0, 3.0]])
