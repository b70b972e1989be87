"""The new values of captures and arguments that a compiled function updates in place are
copied into their storage right after the call, so the executable writes them into arrays it
keeps per thread instead of new ones per call (a new array of many pages costs a page fault
per page). Values that reach the user stay new arrays; threads never share the kept ones."""
from __future__ import annotations

import threading

import numpy as np

import tracejit as tj
from tracejit.runtime import captures


def _spy_new_values(monkeypatch) -> list:
    seen: list = []
    real = captures.store_writes

    def spy(writes, new_values, *rest):
        seen.append([v._data if isinstance(v, tj.Tensor) else v for v in new_values])
        return real(writes, new_values, *rest)
    monkeypatch.setattr(captures, "store_writes", spy)
    return seen


def test_write_backs_reuse_one_array_per_output(monkeypatch):
    p = tj.tensor(np.zeros(1000, np.float32))
    m = tj.tensor(np.ones(1000, np.float32))

    @tj.compile
    def step(g):
        m.mul_(0.5).add_(g)
        p.sub_(m * 0.1)
        return (p * p).sum()

    seen = _spy_new_values(monkeypatch)
    g = tj.tensor(np.linspace(-1, 1, 1000).astype(np.float32))
    pe, me = np.zeros(1000, np.float32), np.ones(1000, np.float32)
    for _ in range(4):
        loss = step(g)
        me = me * np.float32(0.5) + g.numpy()
        pe = pe - me * np.float32(0.1)
        np.testing.assert_allclose(p.numpy(), pe, rtol=1e-6)
        np.testing.assert_allclose(m.numpy(), me, rtol=1e-6)
        np.testing.assert_allclose(loss.item(), float((pe.astype(np.float64) ** 2).sum()),
                                   rtol=1e-5)
    # the calls after the first (which traces) hand store_writes the same arrays
    assert len(seen) == 4
    for a, b in zip(seen[2], seen[3]):
        assert a is b


def test_a_written_value_the_user_also_gets_is_a_new_array():
    p = tj.tensor(np.zeros(3))

    @tj.compile
    def f(x):
        q = x * 2
        p.copy_(q)
        return q

    r1 = f(tj.tensor(np.ones(3)))
    r2 = f(tj.tensor(np.full(3, 5.0)))
    r3 = f(tj.tensor(np.full(3, 7.0)))
    np.testing.assert_array_equal(r1.numpy(), [2, 2, 2])
    np.testing.assert_array_equal(r2.numpy(), [10, 10, 10])
    np.testing.assert_array_equal(r3.numpy(), [14, 14, 14])
    np.testing.assert_array_equal(p.numpy(), [14, 14, 14])


def test_threads_keep_their_own_write_back_arrays():
    f = tj.compile(lambda x, k: x.mul_(k).add_(1).sum())
    errors: list = []
    start = threading.Barrier(3)

    def work(seed: int) -> None:
        x = np.full(4096, float(seed))
        want = x.copy()
        start.wait()
        for _ in range(200):
            f(x, 1.0)
            want += 1
        if not np.array_equal(x, want):
            errors.append((seed, x[:3], want[:3]))
    f(np.zeros(4096), 1.0)                     # trace and compile once, before the race
    threads = [threading.Thread(target=work, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
