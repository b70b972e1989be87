"""The MPI progress thread (the pump) after a collective's signature check passes and its data
is posted: the peers are in the collective now, so the pump's next test comes after its
shortest nap, not after the long nap its wait for the check had grown to (MPI needs a few
tests to move the posted data on; a bucket's all-reduce then completes sooner behind
backward). Checked on the order of the pump's own events against a fake mpi4py."""
import threading
import time

import numpy as np

from tracejit.distributed import mpi_backend
from tracejit.distributed.base import ReduceOp

from fake_mpi_pump import pumped_backend


class LateCheck:
    """A signature check that passes once `passed` is set; notes when it first did."""

    def __init__(self, log):
        self.passed = threading.Event()
        self.log = log
        self.seen = False

    def test(self):
        if self.passed.is_set() and not self.seen:
            self.seen = True
            self.log.append(("check passed", None))
        return self.passed.is_set()


class Requests:
    def __init__(self, log):
        self.log = log
        self.done = threading.Event()

    def Testall(self, reqs):          # noqa: N802  (mpi4py's spelling)
        self.log.append(("test", None))
        return self.done.is_set()


def test_pump_tests_soon_after_the_data_is_posted(monkeypatch):
    log = []
    requests = Requests(log)
    be = pumped_backend(monkeypatch, requests)
    check = LateCheck(log)
    be.pg.take_check = lambda: check

    class NapLog(threading.Condition):
        def wait(self, timeout=None):
            if timeout is not None:
                log.append(("nap", timeout))
            return super().wait(timeout)
    be._pump_cv = NapLog()
    work = be.all_reduce_async(np.ones(4, np.float32), ReduceOp.SUM, "all_reduce (late peer)")
    try:
        time.sleep(0.1)                 # the pump backs off while the peer is late
        naps = [t for kind, t in log if kind == "nap"]
        assert naps and max(naps) == mpi_backend.PUMP_NAP_MAX_S, naps
        check.passed.set()              # the peer arrives: the data is posted at the next look
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(k == "test" for k, _ in log) < 3:
            time.sleep(0.001)
        requests.done.set()
        work.wait(timeout=20)
        i = log.index(("check passed", None))
        after = [t for kind, t in log[i:] if kind == "nap"]
        # the data's first test comes at once, the next after the shortest nap
        assert log[i + 1] == ("test", None), log[i:i + 4]
        assert after[0] == mpi_backend.PUMP_NAP_MIN_S, after
    finally:
        requests.done.set()
        check.passed.set()
        be.close()
