"""runtime/grad_sync.py's CPU path: a compiled model's backward writes the gradients of each
DDP bucket straight into the bucket's flat array, the syncer starts the bucket's all-reduce
(in place on that array) right after the program step that completes it, is asked to
progress after every later step, and the waits come at the end, before any gradient is used.
A fake syncer stands for DDP's reducer: its "all-reduce" of two identical ranks doubles the
bucket in place when waited for, so the gradients must come back exactly doubled."""
import numpy as np

import tracejit as tj
from tracejit.runtime import grad_sync

from grad_sync_helpers import grads


class Doubling:
    def __init__(self, flat, log):
        self.flat, self.log = flat, log

    def wait(self):
        self.log.append(("wait", None))
        self.flat *= 2


class FakeSyncer:
    """Puts the given parameters, in that order, into buckets of `per` each."""

    def __init__(self, params, per):
        self.params, self.per, self.log = params, per, []

    def compiled_plan(self, tensors):
        where = {id(t): i for i, t in enumerate(tensors)}
        pos = [where[id(p)] for p in self.params]
        return grad_sync.Plan(tuple(tuple(pos[i:i + self.per])
                                    for i in range(0, len(pos), self.per)), 1, 0, self)

    def start_bucket(self, flat):
        self.log.append(("start", (flat.copy(), flat)))
        return Doubling(flat, self.log)

    def progress(self):
        self.log.append(("progress", None))


def mlp():
    tj.manual_seed(3)
    return tj.nn.Sequential(tj.nn.Linear(5, 32, dtype=tj.float64), tj.nn.Tanh(),
                            tj.nn.Linear(32, 32, dtype=tj.float64), tj.nn.Tanh(),
                            tj.nn.Linear(32, 1, dtype=tj.float64))


def test_buckets_are_written_started_between_steps_and_waited_before_use():
    model = mlp()
    model.compile()
    x = tj.tensor(np.random.default_rng(0).standard_normal((7, 5)))
    plain = grads(model, x)
    params = list(model.parameters())[::-1]         # DDP's order: the output layer first
    before = len(grad_sync.all_variants())
    for _ in range(2):
        syncer = FakeSyncer(params, per=2)
        got = grads(model, x, syncer)
        for a, b in zip(plain, got):
            np.testing.assert_array_equal(2 * a, b)
        kinds = [k for k, _ in syncer.log]
        starts = [i for i, k in enumerate(kinds) if k == "start"]
        assert len(starts) == 3, kinds
        # bucket 0 starts while backward steps are still to run, and every wait comes last
        assert "progress" in kinds[starts[0] + 1:starts[-1]], kinds
        assert kinds[-3:] == ["wait"] * 3 and "wait" not in kinds[:-3], kinds
        # what a bucket held when its all-reduce started: its gradients, as the program
        # wrote them, in bucket order
        by_param = {id(p): g for p, g in zip(model.parameters(), plain)}
        for b, i in enumerate(starts):
            at_start, flat = syncer.log[i][1]
            want = np.concatenate([by_param[id(p)].ravel() for p in params[2 * b:2 * b + 2]])
            np.testing.assert_array_equal(at_start, want)
            np.testing.assert_array_equal(flat, 2 * want)
    # the plain executable ran: nothing was rebuilt or recompiled
    assert len(grad_sync.all_variants()) == before


class Tied(tj.nn.Module):
    """Two parameters whose gradients are one value of the backward graph (an output twice,
    returned as a copy), and a third with a gradient of its own."""

    def __init__(self):
        super().__init__()
        self.a = tj.nn.Parameter(tj.tensor(np.linspace(0.5, 1.5, 4)))
        self.b = tj.nn.Parameter(tj.tensor(np.linspace(-1.0, 1.0, 4)))
        self.c = tj.nn.Parameter(tj.tensor(np.linspace(2.0, 3.0, 4)))

    def forward(self, x):
        return x * (self.a + self.b) + tj.sin(x * self.c)


def test_outputs_that_are_copies_are_copied_into_their_bucket():
    model = Tied()
    model.compile()
    x = tj.tensor(np.random.default_rng(1).standard_normal((3, 4)))
    plain = grads(model, x)
    for per in (1, 2, 3):
        syncer = FakeSyncer([model.c, model.b, model.a], per)
        got = grads(model, x, syncer)
        for a, b in zip(plain, got):
            np.testing.assert_array_equal(2 * a, b)
        assert [k for k, _ in syncer.log].count("start") == -(-3 // per)


def test_layout_places_each_start_after_the_last_step_touching_its_gradients():
    model = mlp()
    model.compile()
    x = tj.tensor(np.random.default_rng(0).standard_normal((7, 5)))
    syncer = FakeSyncer(list(model.parameters())[::-1], per=2)
    seen = {}

    def spy(exe, plan, args, _run=grad_sync.run_in_buckets):
        seen["exe"], seen["plan"] = exe, plan
        return _run(exe, plan, args)
    grad_sync.run_in_buckets, old = spy, grad_sync.run_in_buckets
    try:
        grads(model, x, syncer)
    finally:
        grad_sync.run_in_buckets = old
    exe, plan = seen["exe"], seen["plan"]
    lay = grad_sync.layout(exe, plan)
    last = {}
    for i, slots in enumerate(exe.step_slots):
        for s in slots:
            last[s] = i
    for b, rows in enumerate(lay.places):
        want = max(last[exe.out_plan[i][0]] for i, *_ in rows)
        assert lay.ready[b] == max(want, lay.ready[b - 1] if b else -1)
    assert lay.ready == sorted(lay.ready) and lay.ready[0] < lay.n_steps - 1, lay.ready
