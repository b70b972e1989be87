"""SyncBatchNorm: on 2 ranks (one launch: sync_batchnorm_worker.py) its shards equal BatchNorm on
the full batch, eagerly, compiled and converted under DDP
(eager and a compiled training step); in one process (no process group) it
is BatchNorm, as torch's is, and its errors are torch's."""
import numpy as np
import pytest
import torch

import tracejit as tj
from dist_launch import launch, oks, report
from sync_bn_cases import torch_refs

CHECKS = ["sync_eager", "sync_compiled", "convert_ddp", "ddp_compiled_step"]


def test_sync_batchnorm_on_two_ranks(tmp_path):
    refs = str(tmp_path / "torch_refs.npz")
    torch_refs(refs)
    proc = launch("sync_batchnorm_worker.py", [refs] + CHECKS, nproc=2, timeout=120)
    assert proc.returncode == 0, report(proc)
    assert oks(proc) == {c: 2 for c in CHECKS}, report(proc)


def test_sync_batchnorm_without_group_is_batchnorm():
    x = np.random.default_rng(0).standard_normal((4, 3, 5))
    net = tj.nn.Sequential(tj.nn.Linear(5, 5, dtype=tj.float64),
                           tj.nn.Sequential(tj.nn.BatchNorm1d(3, dtype=tj.float64)))
    inner = net[1][0]
    conv = tj.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    assert conv is net and isinstance(net[1][0], tj.nn.SyncBatchNorm)
    sbn = net[1][0]
    assert sbn.weight is inner.weight and sbn.running_var is inner.running_var
    assert "1.0.running_mean" in net.state_dict()
    ref = torch.nn.BatchNorm1d(3, dtype=torch.float64)

    xs = tj.tensor(x, requires_grad=True)       # captured: see sync_batchnorm_worker.py

    def step():
        y = sbn(xs)
        (y * y).sum().backward()
        return y
    for run in (step, tj.compile(step)):        # eager, then compiled: two training steps
        xt = torch.tensor(x, requires_grad=True)
        xs.grad = None
        y, yt = run(), ref(xt)
        (yt * yt).sum().backward()
        np.testing.assert_allclose(y.detach().numpy(), yt.detach().numpy(), rtol=1e-12,
                                   atol=1e-12)
        np.testing.assert_allclose(xs.grad.numpy(), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sbn.running_var.numpy(), ref.running_var.numpy(), rtol=1e-12)
    # a single BatchNorm converts to a new layer holding its tensors
    bn = tj.nn.BatchNorm2d(2)
    new = tj.nn.SyncBatchNorm.convert_sync_batchnorm(bn)
    assert isinstance(new, tj.nn.SyncBatchNorm) and new.running_mean is bn.running_mean
    with pytest.raises(ValueError, match="expected at least 2D input"):
        tj.nn.SyncBatchNorm(3)(tj.ones(3))
    with pytest.raises(ValueError, match="number of input channels should be non-zero"):
        tj.nn.SyncBatchNorm(0)(tj.ones(2, 0))
