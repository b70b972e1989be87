"""DDP buckets in a compiled training step on the CPU (runtime/flat_inputs.py): the program
writes each bucket's gradients straight into one flat array, whose all-reduce then starts in
place (dist_bucket_start), and the reduced array is what the optimizer's kernels read
(dist_bucket_wait, kept, not copied). One process, a world of one whose all-reduce is a
stand-in that doubles the array in place (the sum over two ranks holding the same data), so
that a value read from the reduced bucket, or wrongly from the local one, shows."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.distributed import ReduceOp, traced
from tracejit.distributed.base import DistError
from tracejit.ir.prims_collective import RUNNERS
from tracejit.nn.parallel import DistributedDataParallel as DDP
from tracejit.runtime import flat_inputs, llvm_backend


class _Work:
    def wait(self):
        pass


class _Doubling:
    pump = False

    def __init__(self, log):
        self.log = log

    def all_reduce(self, a, op, desc):
        self.log.append(("reduce", a))
        a *= 2
        return _Work()

    def progress(self):
        pass


@pytest.fixture
def doubling(world_of_one, monkeypatch):
    """The log of the bucket starts ("start", the flat array's content then, the array, the
    pieces as the program passed them) and of the stand-in's reductions."""
    log = []
    backend = _Doubling(log)
    monkeypatch.setattr(traced, "backend_for", lambda pg, name, arrays: backend)
    start = RUNNERS["dist_bucket_start"]

    def logged(flat, pieces, **params):
        log.append(("start", flat.copy(), flat, list(pieces)))
        return start(flat, pieces, **params)
    monkeypatch.setitem(RUNNERS, "dist_bucket_start", logged)
    yield log
    traced._forget_pending()


def _net():
    tj.manual_seed(3)
    return tj.nn.Sequential(tj.nn.Linear(5, 7, dtype=tj.float64), tj.nn.Tanh(),
                            tj.nn.Linear(7, 7, dtype=tj.float64), tj.nn.Tanh(),
                            tj.nn.Linear(7, 2, dtype=tj.float64))


def _data(step):
    rng = np.random.default_rng(40 + step)
    return tj.tensor(rng.standard_normal((6, 5))), tj.tensor(rng.standard_normal((6, 2)))


def _loss(m, x, y):
    return ((m(x) - y) ** 2).mean()


@pytest.mark.parametrize("profile", ["", "1"])
def test_the_program_writes_each_bucket_in_place_and_the_optimizer_reads_it_reduced(
        doubling, monkeypatch, profile):
    # (TRACEJIT_PROFILE runs each kernel of a segment as a step of its own: other indices)
    monkeypatch.setenv("TRACEJIT_PROFILE", profile)
    model, ref = _net(), _net()
    ddp = DDP(model, bucket_cap_mb=300 / 2 ** 20)      # 300 bytes: several buckets
    buckets = ddp.reducer.buckets
    assert len(buckets) >= 2 and all(len(b.params) > 1 for b in buckets)
    opt = tj.optim.SGD(ddp.parameters(), lr=0.1)
    ref_opt = tj.optim.SGD(ref.parameters(), lr=0.1)

    @tj.compile
    def step(x, y):
        opt.zero_grad()
        _loss(ddp, x, y).backward()
        opt.step()

    names = dict((id(p), n) for n, p in model.named_parameters())
    for s in range(4):
        x, y = _data(s)
        ref_opt.zero_grad()
        _loss(ref, x, y).backward()
        local = {n: p.grad.numpy().copy() for n, p in ref.named_parameters()}
        doubling.clear()
        step(x, y)
        starts = [e for e in doubling if e[0] == "start"]
        assert len(starts) == len(buckets), [e[0] for e in doubling]
        for (_, at_start, flat, pieces), b in zip(starts, buckets):
            assert flat.size == sum(b.numels)
            for p, piece, off, n in zip(b.params, pieces, b.offsets, b.numels):
                # the gradient's own buffer is its place in the bucket: written in place
                assert np.shares_memory(piece, flat), names[id(p)]
                assert piece.__array_interface__["data"][0] == \
                    flat.__array_interface__["data"][0] + off * flat.itemsize
                np.testing.assert_allclose(at_start[off:off + n], local[names[id(p)]].ravel(),
                                           rtol=1e-12, err_msg=names[id(p)])
        # the stand-in's "reduction" doubled every bucket: the same as training on twice the loss
        for p in ref.parameters():
            p.grad = p.grad * 2
        ref_opt.step()
        for (n, p), q in zip(model.named_parameters(), ref.parameters()):
            np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-12,
                                       err_msg=f"step {s}: {n}")


def test_a_compiled_step_copies_no_bucket(doubling, monkeypatch):
    """No concatenation, no copy into the runner, no copy of the reduced bucket: the only
    extern results the program copies are the tickets (scalars)."""
    model = _net()
    ddp = DDP(model, bucket_cap_mb=300 / 2 ** 20)
    opt = tj.optim.AdamW(ddp.parameters(), lr=0.01)

    @tj.compile
    def step(x, y):
        _loss(ddp, x, y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for s in range(2):                  # traced and compiled; the optimizer's state made
        step(*_data(s))
    text = step.lower(*_data(0)).kernels
    assert "concatenate" not in str(text), text
    copies = []

    class _NP:
        def __getattr__(self, name):
            return getattr(np, name)

        def copyto(self, dst, src, **kw):
            copies.append(np.size(src))
            np.copyto(dst, src, **kw)
    monkeypatch.setattr(llvm_backend, "np", _NP())
    monkeypatch.setattr(flat_inputs, "np", _NP())
    doubling.clear()
    step(*_data(2))
    assert [e[0] for e in doubling].count("start") == len(ddp.reducer.buckets)
    assert copies and all(n == 1 for n in copies), copies


def test_a_piece_read_after_the_start_keeps_its_own_buffer(doubling):
    """A piece that a later step reads (here through the reduced bucket) is copied into the
    bucket at the start, so that the later step reads this rank's value, not the reduced one;
    the other pieces are written in place."""
    @tj.compile
    def f(x, y):
        a = x * 2
        b = y + 1
        t = traced.traced_bucket_start([a, b], ReduceOp.SUM)
        w = traced.traced_bucket_wait([a, b], t, ReduceOp.SUM)
        return w, b * w.sum()

    x, y = np.arange(6.0).reshape(2, 3), np.arange(4.0) - 1
    w, c = f(tj.tensor(x), tj.tensor(y))
    want = 2 * np.concatenate([(x * 2).ravel(), y + 1])
    np.testing.assert_allclose(w.numpy(), want)
    np.testing.assert_allclose(c.numpy(), (y + 1) * want.sum())
    (_, _, flat, (pa, pb)), = [e for e in doubling if e[0] == "start"]
    assert np.shares_memory(pa, flat) and not np.shares_memory(pb, flat)


def test_a_bucket_of_an_input_or_a_constant_is_concatenated(doubling):
    """Pieces the program does not write (an argument, a constant) cannot be laid out in
    place: the start concatenates them, with the same result."""
    @tj.compile
    def f(x):
        t = traced.traced_bucket_start([x * 3, x, tj.ones(2, dtype=tj.float64)], ReduceOp.SUM)
        return traced.traced_bucket_wait([x * 3, x, tj.ones(2, dtype=tj.float64)], t,
                                         ReduceOp.SUM)

    x = np.arange(5.0)
    np.testing.assert_allclose(f(tj.tensor(x)).numpy(),
                               2 * np.concatenate([3 * x, x, np.ones(2)]))


def test_a_bucket_wait_is_not_paired_with_the_start_of_a_call_that_failed(world_of_one,
                                                                        monkeypatch):
    monkeypatch.setattr(traced, "backend_for", lambda pg, name, arrays: _Doubling([]))
    stale = np.ones(4)
    traced._run_bucket_start(stale, [stale[:2], stale[2:]], op=0)     # its call then raised
    flat = np.full(4, 2.0)
    traced._run_bucket_start(flat, [flat[:2], flat[2:]], op=0)
    try:
        with pytest.raises(DistError, match="failed between start and wait"):
            traced._run_bucket_wait(None, [flat[:2], flat[2:]], op=0)
    finally:
        traced._forget_pending()
    assert not traced._PENDING
