"""CUDA graphs for compiled steps (`tj.compile(fn, mode="reduce-overhead")`,
runtime/cuda_graphs.py), checked on the strict fake CuPy (tests/fakecupy.py: stream capture
records kernel launches, GEMMs and device copies, anything else during a capture raises, and a
replay resolves every recorded address to live memory) with host stand-ins for the generated
kernels (fake_cuda_program.py). The `gpu` tests run real CUDA graphs against NumPy."""
import threading
import warnings

import numpy as np
import pytest

import fakecupy
import fake_cuda_program
import tracejit as tj
from conftest import assert_close
from tracejit.runtime import cublas_ctypes, cuda_gemm, cuda_graphs
from tracejit.runtime.cuda_graphs import CudaGraphExecutable


@pytest.fixture
def gpu(fake_gpu, monkeypatch):
    fake_cuda_program.install(monkeypatch)
    return fake_gpu


def _mlp(x, w, b, scale):
    return (tj.tanh(x @ w + b) * scale).sum(axis=1)


def _exe(fn, *args):
    exe = fn.lower(*args)._entry.exe
    assert isinstance(exe, CudaGraphExecutable)
    return exe


def _ops(entries):
    """Kernel launches and GEMMs, as (kind, name or sizes), from fakecupy.LOG or graph ops."""
    out = []
    for e in entries:
        if e[0] == "kernel":
            grid, block = e[-2:] if len(e) == 4 else e[3:5]
            out.append(("kernel", e[1], tuple(grid), tuple(block)))
        elif e[0] == "gemm":
            out.append(("gemm",) + (tuple(e[1:5]) if len(e) == 5 else (e[3], e[4], e[5], e[-1])))
    return out


def _params(rng):
    w = rng.standard_normal((8, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    return w, b


def test_mode_is_checked_and_means_nothing_on_the_cpu():
    with pytest.raises(ValueError, match="unknown mode 'max-autotune'.*'default', "
                                         "'reduce-overhead'"):
        tj.compile(_mlp, mode="max-autotune")
    with pytest.raises(ValueError, match="unknown mode 'fast'"):
        tj.compile(mode="fast")
    rng = np.random.default_rng(0)
    w, b = _params(rng)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    want = tj.compile(_mlp, backend="interpreter")(x, w, b, 0.5)
    for mode in ("default", "reduce-overhead", None):
        assert_close(tj.compile(_mlp, mode=mode)(x, w, b, 0.5), want)


def test_default_mode_keeps_plain_launches(gpu):
    rng = np.random.default_rng(0)
    w, b = _params(rng)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    f = tj.compile(_mlp)
    f(x, tj.tensor(w, device="cuda"), b, 0.5)
    assert not isinstance(f.lower(x, tj.tensor(w, device="cuda"), b, 0.5)._entry.exe,
                          CudaGraphExecutable)


def test_replays_match_the_interpreter_over_steps_with_new_inputs(gpu):
    """Device tensors, host arrays and Python scalars, new every step: replays read them."""
    rng = np.random.default_rng(1)
    w, b = _params(rng)
    wc = tj.tensor(w, device="cuda")
    f = tj.compile(_mlp, mode="reduce-overhead")
    ref = tj.compile(_mlp, backend="interpreter")
    for step in range(6):
        x = rng.standard_normal((5, 8)).astype(np.float32)
        b = rng.standard_normal(4).astype(np.float32)          # a host array
        got = f(tj.tensor(x, device="cuda"), wc, b, 0.1 * step)  # and a scalar
        assert got.device == "cuda:0"
        assert_close(got.cpu(), ref(x, w, b, 0.1 * step))
    stats = _exe(f, tj.tensor(x, device="cuda"), wc, b, 0.0).stats
    assert stats["replays"] >= 4 and stats["captures"] <= 2


def test_the_captured_launches_are_the_plain_launches(gpu):
    rng = np.random.default_rng(2)
    w, b = _params(rng)
    x = tj.tensor(rng.standard_normal((5, 8)).astype(np.float32), device="cuda")
    wc, bc = tj.tensor(w, device="cuda"), tj.tensor(b, device="cuda")
    tj.compile(_mlp)(x, wc, bc, 2.0)
    plain = _ops(fakecupy.LOG)
    assert [op[0] for op in plain] == ["gemm", "kernel"]
    f = tj.compile(_mlp, mode="reduce-overhead")
    f(x, wc, bc, 2.0)
    (rec,) = _exe(f, x, wc, bc, 2.0)._recordings.values()
    assert _ops(rec.graph.ops) == plain
    fakecupy.LOG.clear()
    f(x, wc, bc, 3.0)                               # a replay runs exactly the graph
    assert _ops(fakecupy.LOG) == plain and rec.graph.launches == 1


def test_outputs_of_a_step_are_not_overwritten_by_the_next(gpu):
    rng = np.random.default_rng(3)
    w, b = _params(rng)
    wc, bc = tj.tensor(w, device="cuda"), tj.tensor(b, device="cuda")
    f = tj.compile(lambda x, w, b: (x @ w + b, tj.tanh(x).sum()), mode="reduce-overhead")
    xs = [rng.standard_normal((5, 8)).astype(np.float32) for _ in range(5)]
    outs = [f(tj.tensor(x, device="cuda"), wc, bc) for x in xs]
    for x, (y, s) in zip(xs, outs):
        assert_close(y.cpu(), x @ w + b)
        assert_close(s.cpu(), np.tanh(x).sum(), rtol=1e-5)


def test_an_output_that_is_an_input_is_a_copy(gpu):
    f = tj.compile(lambda x, y: (x, x * y), mode="reduce-overhead")
    x = tj.tensor(np.arange(4, dtype=np.float32), device="cuda")
    outs = [f(x, float(k)) for k in range(3)]
    x._data[...] = fakecupy.asarray(np.full(4, -1, np.float32))
    for k, (a, p) in enumerate(outs):
        assert_close(a.cpu(), np.arange(4, dtype=np.float32))
        assert_close(p.cpu(), np.arange(4, dtype=np.float32) * k)


def test_an_input_at_a_new_address_is_recorded_once_more_then_copied(gpu):
    rng = np.random.default_rng(4)
    w, b = _params(rng)
    wc, bc = tj.tensor(w, device="cuda"), tj.tensor(b, device="cuda")
    f = tj.compile(_mlp, mode="reduce-overhead")
    xs = [rng.standard_normal((5, 8)).astype(np.float32) for _ in range(5)]
    keep = [tj.tensor(x, device="cuda") for x in xs]        # every one at its own address
    for x, xc in zip(xs, keep):
        assert_close(f(xc, wc, bc, 1.0).cpu(), np.tanh(x @ w + b).sum(axis=1))
    exe = _exe(f, keep[0], wc, bc, 1.0)
    assert exe.stats == {"captures": 2, "replays": 3, "warmups": 2}
    (rec,) = exe._recordings.values()
    assert sorted(rec.direct) == [1, 2]           # w and b read where they are; x copied


def test_a_new_shape_records_its_own_graph(gpu):
    rng = np.random.default_rng(5)
    w, b = _params(rng)
    wc, bc = tj.tensor(w, device="cuda"), tj.tensor(b, device="cuda")
    f = tj.compile(_mlp, mode="reduce-overhead")
    for n in (5, 3, 5, 3, 1, 5):
        x = rng.standard_normal((n, 8)).astype(np.float32)
        assert_close(f(tj.tensor(x, device="cuda"), wc, bc, 1.0).cpu(),
                     np.tanh(x @ w + b).sum(axis=1))
    assert f.cache_info().entries == 3
    for n in (5, 3, 1):
        x = tj.tensor(np.zeros((n, 8), np.float32), device="cuda")
        assert _exe(f, x, wc, bc, 1.0).stats["captures"] >= 1


def test_dropout_draws_a_new_mask_every_replay(gpu):
    """The generator's seed and offset are inputs copied before each replay: the masks
    differ per step and are the plain launches' masks for the same seed."""
    def f(x):
        return tj.dropout(x, 0.5, True)
    x = tj.tensor(np.ones((64,), np.float32), device="cuda")
    runs = {}
    for mode in ("default", "reduce-overhead"):
        tj.manual_seed(7)
        g = tj.compile(f, mode=mode)
        runs[mode] = [g(x).cpu().numpy() for _ in range(4)]
    for a, b in zip(*runs.values()):
        np.testing.assert_array_equal(a, b)
    masks = {tuple(m != 0) for m in runs["reduce-overhead"]}
    assert len(masks) == 4
    assert _exe(tj.compile(f, mode="reduce-overhead"), x) is not None


def test_training_step_updates_parameters_in_place_and_replays(gpu):
    """A compiled SGD step: the parameters and momentum buffer are written back into the same
    device arrays (their addresses stay), so every step after the first replays the graph;
    losses, parameters and gradients are the eager step's."""
    rng = np.random.default_rng(6)
    w0 = rng.standard_normal((8, 4)).astype(np.float32) * 0.3
    xs = [rng.standard_normal((5, 8)).astype(np.float32) for _ in range(5)]

    def step(w, mom, x):
        loss = (tj.tanh(x @ w) ** 2).sum()
        loss.backward()
        with tj.no_grad():
            mom.mul_(0.9).add_(w.grad)
            w.sub_(0.1 * mom)
        w.grad = None
        return loss
    we, me = tj.tensor(w0.copy(), requires_grad=True), tj.zeros(8, 4)
    wc = tj.tensor(w0.copy(), requires_grad=True, device="cuda")
    mc = tj.zeros(8, 4, device="cuda")
    ptrs = (wc._data.data.ptr, mc._data.data.ptr)
    compiled = tj.compile(lambda x: step(wc, mc, x), mode="reduce-overhead")
    for x in xs:
        le = step(we, me, tj.tensor(x))
        lc = compiled(tj.tensor(x, device="cuda"))
        assert_close(lc.cpu(), le, rtol=1e-5)
        assert_close(wc.cpu(), we, rtol=1e-5)
        assert_close(mc.cpu(), me, rtol=1e-5)
    assert (wc._data.data.ptr, mc._data.data.ptr) == ptrs
    exe = _exe(compiled, tj.tensor(xs[0], device="cuda"))
    assert exe.stats["replays"] >= 3 and exe.stats["captures"] <= 2
    # the new parameter and momentum are written over the old ones by the kernel computing
    # them (cuda_graphs._Recording._in_place), not stored by copies: the graph has no copy,
    # and the caller copies nothing again; a replay makes one copy (x in)
    (rec,) = exe._recordings.values()
    assert "copy" not in [op[0] for op in rec.graph.ops] and len(rec.in_place) == 2
    fakecupy.LOG.clear()
    compiled(tj.tensor(xs[0], device="cuda"))
    assert [e[0] for e in fakecupy.LOG].count("copy") == 1


def test_backward_of_a_compiled_call_replays_too(gpu):
    rng = np.random.default_rng(8)
    w, b = _params(rng)
    f = tj.compile(_mlp, mode="reduce-overhead")
    for _ in range(3):
        x = rng.standard_normal((5, 8)).astype(np.float32)
        wc = tj.tensor(w, device="cuda", requires_grad=True)
        f(tj.tensor(x, device="cuda"), wc, tj.tensor(b, device="cuda"), 1.0).sum().backward()
        we = tj.tensor(w, requires_grad=True)
        _mlp(tj.tensor(x), we, tj.tensor(b), 1.0).sum().backward()
        assert_close(wc.grad.cpu(), we.grad, rtol=1e-5)


def test_threads_get_graphs_of_their_own(gpu):
    rng = np.random.default_rng(9)
    w, b = _params(rng)
    wc, bc = tj.tensor(w, device="cuda"), tj.tensor(b, device="cuda")
    f = tj.compile(_mlp, mode="reduce-overhead")
    x0 = rng.standard_normal((5, 8)).astype(np.float32)
    f(tj.tensor(x0, device="cuda"), wc, bc, 1.0)
    errors = []
    # both threads alive together: a thread that has ended may pass its id on to the next
    both = threading.Barrier(2, timeout=60)

    def work(seed):
        r = np.random.default_rng(seed)
        try:
            both.wait()
            for _ in range(3):
                x = r.standard_normal((5, 8)).astype(np.float32)
                assert_close(f(tj.tensor(x, device="cuda"), wc, bc, 1.0).cpu(),
                             np.tanh(x @ w + b).sum(axis=1))
        except Exception as e:         # reported below, in the test's thread
            errors.append(e)
    ts = [threading.Thread(target=work, args=(s,)) for s in (1, 2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert len(_exe(f, tj.tensor(x0, device="cuda"), wc, bc, 1.0)._recordings) == 3


def test_threads_that_come_and_go_keep_a_bounded_number_of_graphs(gpu):
    rng = np.random.default_rng(18)
    w, b = _params(rng)
    f = tj.compile(_mlp, mode="reduce-overhead")
    xs = [rng.standard_normal((5, 8)).astype(np.float32) for _ in range(12)]
    got = [None] * len(xs)
    done = threading.Barrier(len(xs))
    turn = threading.Lock()

    def work(k):
        with turn:
            got[k] = f(tj.tensor(xs[k], device="cuda"), w, b, 1.0).cpu().numpy()
        done.wait()                          # all alive at once: twelve distinct threads
    ts = [threading.Thread(target=work, args=(k,)) for k in range(len(xs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for x, g in zip(xs, got):
        np.testing.assert_allclose(g, np.tanh(x @ w + b).sum(axis=1), rtol=1e-5, atol=1e-6)
    exe = _exe(f, tj.tensor(xs[0], device="cuda"), w, b, 1.0)
    assert len(exe._recordings) <= cuda_graphs.MAX_RECORDINGS


def test_an_extern_step_falls_back_to_plain_launches_with_a_warning(gpu):
    f = tj.compile(lambda x: tj.argsort(x * 2.0, dim=-1), mode="reduce-overhead")
    x = np.array([[3.0, 1.0, 2.0]], np.float32)
    with pytest.warns(RuntimeWarning, match=r"called at test_cuda_graphs.py:\d+\): not "
                                            r"replayed from a CUDA graph.*argsort"):
        got = f(tj.tensor(x, device="cuda"))
    np.testing.assert_array_equal(got.cpu().numpy(), [[1, 2, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # warned once per executable
        np.testing.assert_array_equal(f(tj.tensor(x, device="cuda")).cpu().numpy(),
                                      [[1, 2, 0]])


def test_a_failed_capture_warns_and_keeps_the_results(gpu, monkeypatch):
    def refuse(self, mode=None):
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(fakecupy.Stream, "begin_capture", refuse)
    rng = np.random.default_rng(10)
    w, b = _params(rng)
    f = tj.compile(_mlp, mode="reduce-overhead")
    with pytest.warns(RuntimeWarning, match="_mlp.*the capture failed.*not permitted"):
        for _ in range(3):
            x = rng.standard_normal((5, 8)).astype(np.float32)
            assert_close(f(tj.tensor(x, device="cuda"), w, b, 1.0).cpu(),
                         np.tanh(x @ w + b).sum(axis=1))


def test_a_capture_that_reads_freed_memory_is_caught_by_the_fake(gpu):
    """The fake itself: a graph whose buffer was freed does not replay silently."""
    a = fakecupy.empty(4, np.float32)
    a[...] = 1.0
    s = fakecupy.Stream(non_blocking=True)
    with s:
        s.begin_capture()
        a[...] = 2.0
        with pytest.raises(RuntimeError, match="capturing"):
            fakecupy.empty(3, np.float32)
        g = s.end_capture()
    g.launch()
    assert a.get().tolist() == [2.0] * 4
    del a
    with pytest.raises(RuntimeError, match="no longer allocated"):
        g.launch()


def test_gemms_are_recorded_through_a_handle_of_our_own(gpu):
    """cuBLAS on CuPy's shared handle would run at capture time, outside the graph: the
    recording's handle has its own workspace and is set to the capturing stream."""
    rng = np.random.default_rng(11)
    w, b = _params(rng)
    f = tj.compile(_mlp, mode="reduce-overhead")
    x = tj.tensor(rng.standard_normal((5, 8)).astype(np.float32), device="cuda")
    wc = tj.tensor(w, device="cuda")
    f(x, wc, b, 1.0)
    (rec,) = _exe(f, x, wc, b, 1.0)._recordings.values()
    handle = fakecupy.CUBLAS.handles[rec.workspace.handle]
    assert handle["workspace"] == (rec.workspace.buffer.data.ptr, cuda_graphs.WORKSPACE_BYTES)
    assert [op[0] for op in rec.graph.ops].count("gemm") == 1


def test_nanogpt_adamw_step_replays_as_the_plain_launches(gpu):
    """A real model's training step (embedding gathers, layer norms, attention, AdamW) through
    the graph path: every step's loss and the parameters are the plain launches'."""
    from nanogpt_helpers import compiled_training_steps, load_nanogpt
    mod = load_nanogpt("tracejit", "nanogpt_graphs_fake")
    cfg = mod.GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=2, n_embd=16)
    models, steps = compiled_training_steps(mod, cfg, 1e-2, ("default", "reduce-overhead"))
    rng = np.random.default_rng(12)
    for _ in range(4):
        idx, tgt = rng.integers(0, 16, (2, 8)), rng.integers(0, 16, (2, 8))
        la, lb = (s(tj.tensor(idx, device="cuda"), tj.tensor(tgt, device="cuda"))
                  for s in steps)
        assert_close(lb.cpu(), la.cpu(), rtol=1e-6)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        assert_close(q.detach().cpu(), p.detach().cpu(), rtol=1e-6)
    exe = _exe(steps[1], tj.tensor(idx, device="cuda"), tj.tensor(tgt, device="cuda"))
    assert exe.plain_reason is None and exe.stats["replays"] >= 2


def test_a_gemm_operand_cublas_cannot_read_is_copied_inside_the_graph(gpu):
    """A row broadcast has no leading dimension: the plain path copies it inside gemm (an
    allocation, refused during capture); the recording copies it into a buffer of its own
    with a copy kernel recorded before the GEMM."""
    rng = np.random.default_rng(13)
    w = rng.standard_normal((6, 3)).astype(np.float32)
    f = tj.compile(lambda v, w: tj.broadcast_to(v, (4, 6)) @ w, mode="reduce-overhead")
    wc = tj.tensor(w, device="cuda")
    for _ in range(4):
        v = rng.standard_normal(6).astype(np.float32)
        assert_close(f(tj.tensor(v, device="cuda"), wc).cpu(), np.broadcast_to(v, (4, 6)) @ w,
                     rtol=1e-5)
    exe = _exe(f, tj.tensor(v, device="cuda"), wc)
    assert exe.plain_reason is None and exe.stats["replays"] >= 2
    (rec,) = exe._recordings.values()
    assert [op[0] for op in rec.graph.ops] == ["copy", "gemm"]


def test_an_argument_that_moves_between_host_and_device_is_recorded_again(gpu):
    """The executable itself (compiled calls keep an argument's kind per signature): a host
    argument copied through the staging buffer, then a device one, then host again."""
    rng = np.random.default_rng(14)
    w, b = _params(rng)
    wc = tj.tensor(w, device="cuda")
    f = tj.compile(_mlp, mode="reduce-overhead")
    x = rng.standard_normal((5, 8)).astype(np.float32)
    exe = _exe(f, tj.tensor(x, device="cuda"), wc, b, 1.0)
    for k in range(6):
        x = rng.standard_normal((5, 8)).astype(np.float32)
        xa = fakecupy.asarray(x) if k % 3 else x          # host, device, device, host, ...
        ba = b if k % 2 else fakecupy.asarray(b)
        (got,) = exe.run([xa, wc._data, ba, np.float32(1.0)])
        np.testing.assert_allclose(got.get(), np.tanh(x @ w + b).sum(axis=1), rtol=1e-5,
                                   atol=1e-6)


def test_no_loadable_libcublas_falls_back(gpu, monkeypatch):
    def missing():
        raise cublas_ctypes.CublasError("tracejit: libcublas not found (libcublas.so.13: "
                                        "cannot open shared object file)")
    monkeypatch.setattr(cuda_gemm, "graph_binding", missing)
    rng = np.random.default_rng(15)
    w, b = _params(rng)
    f = tj.compile(_mlp, mode="reduce-overhead")
    x = rng.standard_normal((5, 8)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="no cuBLAS handle with a workspace.*libcublas"):
        got = f(tj.tensor(x, device="cuda"), w, b, 1.0)
    assert_close(got.cpu(), np.tanh(x @ w + b).sum(axis=1))


def test_a_new_recording_is_logged_with_tracejit_log_recompiles(gpu, monkeypatch, capsys,
                                                                caplog):
    monkeypatch.setenv("TRACEJIT_LOG", "recompiles")
    rng = np.random.default_rng(16)
    w, b = _params(rng)
    wc = tj.tensor(w, device="cuda")
    f = tj.compile(_mlp, mode="reduce-overhead")
    xs = [tj.tensor(rng.standard_normal((5, 8)).astype(np.float32), device="cuda")
          for _ in range(3)]
    for x in xs:
        f(x, wc, b, 1.0)
    err = capsys.readouterr().err + caplog.text       # (logging when it has a handler)
    assert err.count("CUDA graph is recorded again") == 1
    assert "input(s) 0 (f32[5, 8]) moved" in err


def test_plain_gemms_run_on_the_current_stream(gpu):
    """CuPy's shared cuBLAS handle keeps whatever stream it was last set to: each GEMM sets
    it to the current stream (on a non-blocking stream a GEMM left elsewhere would race)."""
    rng = np.random.default_rng(17)
    w, b = _params(rng)
    f = tj.compile(_mlp)
    x = tj.tensor(rng.standard_normal((5, 8)).astype(np.float32), device="cuda")
    with fakecupy.Stream(non_blocking=True) as s:
        f(x, w, b, 1.0)
    assert fakecupy.CUBLAS.handles[fakecupy._SHARED_HANDLE]["stream"] == s.ptr


def test_modules_take_the_mode_too(gpu):
    """tj.compile(module, mode=...) and module.compile(mode=...) (torch's spellings)."""
    rng = np.random.default_rng(19)
    x = tj.tensor(rng.standard_normal((3, 4)).astype(np.float32), device="cuda")
    for how in ("tj.compile", "module.compile"):
        m = tj.nn.Linear(4, 2).to("cuda")
        if how == "tj.compile":
            f = tj.compile(m, mode="reduce-overhead")
        else:
            m.compile(mode="reduce-overhead")
            f = m
        with tj.no_grad():
            want = (x.cpu() @ m.weight.cpu().T + m.bias.cpu()).numpy()
            for _ in range(3):
                assert_close(f(x).cpu(), want, rtol=1e-5)
            low = (m._compiled_call if how == "module.compile" else f).lower(x)
        assert isinstance(low._entry.exe, CudaGraphExecutable)
        assert low._entry.exe.stats["replays"] == 2
    with pytest.raises(ValueError, match="unknown mode 'turbo'"):
        tj.nn.Linear(4, 2).compile(mode="turbo")
