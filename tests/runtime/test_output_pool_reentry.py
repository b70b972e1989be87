"""The output pool (runtime/buffers.py) returns a block from a weak-reference callback, which
runs in whichever thread drops the anchor's last reference: also inside the pool itself, when a
garbage collection starts there (an allocation under the pool's lock can trigger one) and frees
a reference cycle that held a pooled output. That return must not wait for the lock its own
thread already holds: it hung forever."""
import os
import subprocess
import sys
import threading

import numpy as np

from tracejit.runtime.buffers import OutputPool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N = 1 << 18                      # float32 elements: 1 MiB, pooled


def test_a_block_returned_while_its_thread_is_inside_the_pool():
    pool = OutputPool()
    out = pool.empty((N,), np.float32)
    out[:] = 3.0
    done = threading.Event()

    def drop_inside_the_pool():
        nonlocal out
        with pool._lock:        # as a collection that starts under the pool's lock finds it
            out = None          # the anchor dies here: its block goes back from this thread
        done.set()
    t = threading.Thread(target=drop_inside_the_pool, daemon=True)
    t.start()
    t.join(10)
    assert done.is_set(), "returning a block from inside the pool deadlocked"
    assert pool.live() == 0 and pool.free_bytes() == 4 * N
    again = pool.empty((N,), np.float32)        # the returned block is handed out again
    again[:] = 1.0
    np.testing.assert_array_equal(again, 1.0)


_CHILD = """
import gc
import numpy as np
from tracejit.runtime.buffers import OutputPool

class Cycle:
    pass

pool = OutputPool()
log = []                            # (a callback that allocates: it moves the collector's
gc.callbacks.append(lambda phase, info: log.append((phase, info["generation"], pool._lock))
                    if phase == "start" else None)     # count, and so where it starts)
gc.collect()
a = pool.empty((1 << 18,), np.float32)
c = Cycle(); c.self = c; c.out = pool.empty((1 << 18,), np.float32)
gc.collect(0)                       # the cycle survives into generation 1
del c                               # garbage, for the next generation-1 collection
lists = [[] for _ in range(300)]    # no free list entries left: a new list allocates
gc.set_threshold(1, 1, 100000)      # every other allocation starts a collection
del a                               # a's block goes back; a collection frees c's under it
gc.set_threshold(700, 10, 10)
print("ok", len(log))
"""


def test_a_collection_under_the_pool_lock_frees_a_pooled_output():
    """The same through CPython's own collector: on CPython 3.11 a collection starts at the
    new list the block's return allocates under the lock, and collects the cycle whose
    output's return then waited for that lock forever (other versions schedule collections
    otherwise; there this only checks that nothing hangs)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    try:
        r = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
    except subprocess.TimeoutExpired:
        raise AssertionError("a garbage collection inside the output pool deadlocked") from None
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok"), r.stdout
