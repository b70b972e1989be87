"""Eager mode from several threads at once: different models (an LSTM cell with backward, an
MLP with cross-entropy backward, attention under no_grad, layer_norm/softmax with grad on, a
conv net) share the process-wide caches (fused composite plans, VJP plans, dispatch fast paths,
the grad-off counter). Each thread's values and gradients must be bit for bit those of the
same work run alone in one thread, and match torch's."""
import sys
import threading

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")
ITERS = 4


def _model(lib, kind):
    nn = lib.nn
    if kind == "lstm":
        return nn.LSTMCell(6, 8)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(10, 32), nn.GELU(), nn.Linear(32, 5))
    if kind == "attn":
        return nn.MultiheadAttention(16, 2, batch_first=True)
    if kind == "norm":
        return nn.Sequential(nn.LayerNorm(12), nn.Linear(12, 12))
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3))


def _weights(kind):
    torch.manual_seed(len(kind))
    return {k: v.detach().numpy().copy() for k, v in _model(torch, kind).state_dict().items()}


def _run(lib, kind, weights):
    """ITERS steps of one kind of work; its outputs and parameter gradients as arrays."""
    m = _model(lib, kind)
    m.load_state_dict({k: lib.tensor(v) for k, v in weights.items()})
    rng = np.random.default_rng(7)
    f32 = lambda *s: lib.tensor(rng.standard_normal(s).astype(np.float32))  # noqa: E731
    got = []
    for _ in range(ITERS):
        m.zero_grad()
        if kind == "lstm":
            h = c = f32(3, 8)
            for _ in range(3):
                h, c = m(f32(3, 6), (h, c))
            out = h
            (h * h).sum().backward()
        elif kind == "mlp":
            out = m(f32(16, 10))
            y = lib.tensor(rng.integers(0, 5, 16))
            lib.nn.functional.cross_entropy(out, y).backward()
        elif kind == "attn":
            m.eval()
            x = f32(2, 5, 16)
            with lib.no_grad():
                out = m(x, x, x)[0]
        elif kind == "norm":
            out = lib.softmax(m(f32(4, 3, 12)), -1)
            (out * f32(4, 3, 12)).sum().backward()
        else:
            out = m(f32(2, 2, 6, 6))
            out.square().mean().backward()
        # grad mode is per thread: attention's no_grad in one thread records nothing in another
        got += [out.detach().numpy().copy(), np.array(out.requires_grad)]
        got += [p.grad.numpy().copy() for p in m.parameters() if p.grad is not None]
    return got


KINDS = ("lstm", "mlp", "attn", "norm", "conv")


def test_models_in_threads_give_each_thread_the_single_thread_values():
    weights = {k: _weights(k) for k in KINDS}
    for k in KINDS:                      # torch's values; and every composite's plan made hot
        ref_t = _run(torch, k, weights[k])
        for a, b in zip(_run(tj, k, weights[k]), ref_t):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5, err_msg=k)
    alone = {k: _run(tj, k, weights[k]) for k in KINDS}
    jobs = [k for k in KINDS for _ in range(2)]            # two threads per kind
    results, errors = [None] * len(jobs), []
    barrier = threading.Barrier(len(jobs))

    def body(i):
        try:
            barrier.wait(30)
            out = []
            for _ in range(3):
                out.append(_run(tj, jobs[i], weights[jobs[i]]))
            results[i] = out
        except BaseException as e:      # noqa: BLE001 - raised below, in the test's thread
            errors.append(e)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)         # switch threads often, inside ops
    try:
        threads = [threading.Thread(target=body, args=(i,)) for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        sys.setswitchinterval(old)
    if errors:
        raise errors[0]
    for kind, runs in zip(jobs, results):
        for run in runs:
            assert len(run) == len(alone[kind])
            for j, (a, b) in enumerate(zip(run, alone[kind])):
                assert np.array_equal(a, b), f"{kind}: array {j} differs from the single-thread run"
    assert tj.is_grad_enabled()
