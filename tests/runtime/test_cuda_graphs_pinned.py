"""CUDA graphs stage a call's host values (Python scalars, host arrays, the random seed and
offset) in one page-locked buffer per recording, reused by every replay, and copy it to the
device asynchronously; an event recorded after the copy is waited for before the next call
refills the buffer (runtime/cuda_graphs.py, _Recording.load). On the strict fake CuPy, a copy
from pinned memory whose previous copy was not waited for raises."""
import numpy as np
import pytest

import fakecupy
import fakecupy_pinned
import fake_cuda_program
import tracejit as tj
from conftest import assert_close
from tracejit.runtime.cuda_graphs import CudaGraphExecutable


@pytest.fixture
def gpu(fake_gpu, monkeypatch):
    fake_cuda_program.install(monkeypatch)
    return fake_gpu


def _f(x, w, lr, scale):
    return tj.tanh(x @ w) * lr + scale


def _run(f, w, steps, rng):
    outs = []
    for k in range(steps):
        x = rng.standard_normal((3, 4)).astype(np.float32)      # a host array
        lr, scale = 0.1 * (k + 1), float(k)                     # Python scalars
        got = f(x, w, lr, scale).cpu().numpy()
        want = np.tanh(x.astype(np.float64) @ w.cpu().numpy()) * lr + scale
        assert_close(got, want, rtol=1e-5, atol=1e-6)
        outs.append(got)
    return outs


def test_host_values_go_through_one_pinned_buffer_with_an_event(gpu):
    rng = np.random.default_rng(0)
    w = tj.tensor(rng.standard_normal((4, 2)).astype(np.float32), device="cuda")
    f = tj.compile(_f, mode="reduce-overhead")
    before = fakecupy.COUNTS.get("pinned_allocs", 0)
    fakecupy.LOG.clear()
    _run(f, w, 5, rng)
    exe = f.lower(np.zeros((3, 4), np.float32), w, 0.1, 0.0)._entry.exe
    assert isinstance(exe, CudaGraphExecutable) and exe.stats["replays"] == 4
    (rec,) = exe._recordings.values()
    assert rec._pinned is not None and rec.host_bytes > 0
    assert fakecupy.COUNTS["pinned_allocs"] - before == 1          # reused by every call
    events = [e[0] for e in fakecupy.LOG if e[0] in ("h2d pinned", "event record",
                                                       "event wait")]
    # every copy is followed by its event; every later call waits for it before refilling
    assert events == ["h2d pinned", "event record"] + \
        ["event wait", "h2d pinned", "event record"] * 4


def test_the_fake_refuses_a_refill_before_the_copy_was_waited_for(gpu, monkeypatch):
    """(What the event wait prevents: without it the next call's copy reads a buffer whose
    previous copy may still be running.)"""
    rng = np.random.default_rng(1)
    w = tj.tensor(rng.standard_normal((4, 2)).astype(np.float32), device="cuda")
    f = tj.compile(_f, mode="reduce-overhead")
    monkeypatch.setattr(fakecupy_pinned.Event, "synchronize", lambda self: None)
    _run(f, w, 1, rng)
    with pytest.raises(RuntimeError, match="previous copy to the device may still be running"):
        _run(f, w, 1, rng)


@pytest.mark.parametrize("missing", ["alloc_pinned_memory", "Event"])
def test_without_pinned_memory_or_events_the_buffer_is_pageable(gpu, monkeypatch, missing):
    def refuse(*a, **k):
        raise RuntimeError("no")
    monkeypatch.setattr(gpu.cuda, missing, refuse)
    rng = np.random.default_rng(2)
    w = tj.tensor(rng.standard_normal((4, 2)).astype(np.float32), device="cuda")
    f = tj.compile(_f, mode="reduce-overhead")
    _run(f, w, 4, rng)
    exe = f.lower(np.zeros((3, 4), np.float32), w, 0.1, 0.0)._entry.exe
    (rec,) = exe._recordings.values()
    assert rec._pinned is None and rec.copied is None and exe.stats["replays"] == 3
