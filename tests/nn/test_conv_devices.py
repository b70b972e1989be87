"""Conv2d, pooling and BatchNorm on a "cuda" device through the strict CuPy stand-in
(tests/fakecupy.py): the eager NumPy-style implementations dispatch to CuPy and agree with the
CPU, forward, backward and running statistics. (The compiled CUDA expansion is checked by nvcc
and host-run kernels in tests/codegen/test_conv_cuda.py.)"""
import numpy as np

import fakecupy
import tracejit as tj
from conftest import assert_close
from tracejit import nn


def _model():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, groups=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(4, 4, 2, padding="same", groups=2),
                         nn.AvgPool2d(2, ceil_mode=True), nn.AdaptiveAvgPool2d((2, 1)),
                         nn.Flatten(), nn.Linear(8, 3))


def test_cnn_on_cuda_matches_cpu(fake_gpu):
    tj.manual_seed(0)
    cpu = _model()
    gpu = _model().to("cuda")
    gpu.load_state_dict({k: v.numpy() for k, v in cpu.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 8)).astype(np.float32)
    ref = cpu(tj.tensor(x))
    ref.sum().backward()
    y = gpu(tj.tensor(x, device="cuda"))
    assert y.device == "cuda:0"
    assert_close(y.cpu(), ref.detach().numpy(), 1e-5, 1e-5)
    y.sum().backward()
    for (name, p), q in zip(gpu.named_parameters(), cpu.parameters()):
        assert p.grad.device == "cuda:0", name
        assert_close(p.grad.cpu(), q.grad.numpy(), 1e-4, 1e-5)
    assert_close(gpu[1].running_var.cpu(), cpu[1].running_var.numpy(), 1e-6, 1e-6)

    assert int(gpu[1].num_batches_tracked.cpu().item()) == 1
