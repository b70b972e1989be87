"""Collectives started inside a compiled program and waited for later in it
(distributed/traced.py's dist_all_reduce_start/wait runners): a call that failed between a
start and its wait (an out-of-memory error mid-step, caught, then the next step) must not
have the next call's wait paired with that stale start, also where the ticket is not read
(on a GPU it is a device scalar). One process, a stand-in backend that marks what it
reduced."""
import numpy as np
import pytest

from tracejit.distributed import traced
from tracejit.distributed.base import DistError


class _Work:
    def wait(self):
        pass


class _Backend:
    pump = False

    def all_reduce(self, a, op, desc):
        a += 100                    # "reduced"
        return _Work()

    def progress(self):
        pass


class _Group:
    seq = 0
    size = 2                        # (a world of 1 reduces nothing: no backend call)


@pytest.fixture
def group(monkeypatch):
    pg = _Group()
    monkeypatch.setattr(traced, "is_initialized", lambda: True)
    monkeypatch.setattr(traced, "_group", lambda gid: pg)
    monkeypatch.setattr(traced, "backend_for", lambda pg, name, arrays: _Backend())

    def start(pg, name, desc):
        pg.seq += 1
        return desc
    monkeypatch.setattr(traced, "start", start)
    yield pg
    traced._forget_pending()


def test_a_start_and_its_wait_give_the_reduced_value(group):
    x = np.arange(4, dtype=np.float32)
    ticket = traced._run_start(x, op=0)
    np.testing.assert_array_equal(traced._run_wait(x, None, op=0), x + 100)
    assert ticket == 1 and not traced._PENDING


def test_a_wait_is_not_paired_with_the_start_of_a_call_that_failed(group):
    failed = np.ones(4, np.float32)
    traced._run_start(failed, op=0)            # that call raised before its wait
    x = np.full(4, 2, np.float32)              # the next call: same shape
    traced._run_start(x, op=0)
    with pytest.raises(DistError, match="failed between start and wait"):
        traced._run_wait(x, None, op=0)        # a ticket not read (a GPU's)
    assert not traced._PENDING
    y = np.full(4, 3, np.float32)              # and the call after that pairs up again
    traced._run_start(y, op=0)
    np.testing.assert_array_equal(traced._run_wait(y, None, op=0), y + 100)
