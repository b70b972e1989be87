"""Batched (vmap) graphs on the CUDA backend: the generated CUDA of compiled vmap programs run
on the host (g++ emulation, see test_cuda_host.py) against the interpreter; and, marked `gpu`,
per-example gradients on a real GPU against NumPy."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import tracejit as tj
from test_cuda_host import HostBuild
from tracejit.ir.interpret import interpret

rng = np.random.default_rng(0)


def _elementwise_loss(w, b, x):
    return (tj.tanh(x * w + b) ** 2).sum()


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_vmap_programs_in_generated_cuda_match_the_interpreter(tmp_path):
    w, b = rng.standard_normal(64).astype(np.float32), rng.standard_normal(64).astype(np.float32)
    xs = rng.standard_normal((96, 64)).astype(np.float32)
    progs = [
        # per-example gradients of an elementwise model: unbatched w, b broadcast in the kernel
        (tj.vmap(tj.grad(_elementwise_loss, argnums=(0, 1)), in_axes=(None, None, 0)),
         (w, b, xs)),
        # a shared weight and a batched one, the batch on axis 1 in and last out
        (tj.vmap(lambda a, c: tj.exp(a) * c + a, in_axes=(1, None), out_axes=-1),
         (xs.T.copy(), w)),
        # random numbers, different per example (the same Philox stream, batch-shaped)
        (tj.vmap(lambda a: a + tj.rand(64), randomness="different"), (xs,)),
    ]
    build = HostBuild()
    added = [build.add(f, args) for f, args in progs]
    assert all(added)
    graph, plan, slots, args = build.jobs[-1]          # the random program's hidden inputs:
    build.jobs[-1] = (graph, plan, slots, list(args) + [np.array(7, np.int64),    # seed,
                                                        np.array(-3, np.int64)])  # offset
    for graph, args, got in build.run(tmp_path):
        for g, want in zip(got, interpret(graph, args)):
            np.testing.assert_allclose(g, want, rtol=2e-6, atol=2e-6, err_msg=graph.as_text())


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
def test_per_example_gradients_on_the_gpu_match_numpy():
    w1, w2 = rng.standard_normal((32, 64)) * 0.2, rng.standard_normal((64, 4)) * 0.2
    x, y = rng.standard_normal((256, 32)), rng.standard_normal((256, 4))

    def loss(w1, w2, xi, yi):
        return ((tj.tanh(xi @ w1) @ w2 - yi) ** 2).sum()
    dev = lambda a: tj.tensor(a, device="cuda")                            # noqa: E731
    f = tj.compile(tj.vmap(tj.grad(loss, argnums=(0, 1)), in_axes=(None, None, 0, 0)))
    g1, g2 = f(dev(w1), dev(w2), dev(x), dev(y))
    h = np.tanh(x @ w1)                                                    # by hand, per example
    r = 2 * (h @ w2 - y)                                                   # [256, 4]
    want2 = h[:, :, None] * r[:, None, :]
    dh = (r @ w2.T) * (1 - h * h)
    want1 = x[:, :, None] * dh[:, None, :]
    np.testing.assert_allclose(g1.cpu().numpy(), want1, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g2.cpu().numpy(), want2, rtol=1e-9, atol=1e-12)
    drop = tj.compile(tj.vmap(lambda a: tj.dropout(a, 0.5), randomness="different"))(
        dev(np.ones((64, 128)))).cpu().numpy()
    assert set(np.unique(drop)) <= {0.0, 2.0} and len({r.tobytes() for r in drop}) == 64
