"""runtime/grad_sync.py: a compiled model's backward rebuilt with bucket all-reduces inside.
In a process without a process group the all-reduce is the identity, so the rebuilt backward
must give exactly the plain one's gradients; its program starts each bucket's all-reduce
right after that bucket's last gradient, before the kernels of the later ones."""
import numpy as np
import pytest

import tracejit as tj
from tracejit.runtime import grad_sync

from grad_sync_helpers import grads


class AllInBuckets:
    """A syncer that puts the given parameters, in that order, into buckets of `per` each."""

    def __init__(self, params, per):
        self.params, self.per, self.plans = params, per, 0

    def compiled_plan(self, tensors):
        where = {id(t): i for i, t in enumerate(tensors)}
        pos = [where[id(p)] for p in self.params]
        self.plans += 1
        return grad_sync.Plan(tuple(tuple(pos[i:i + self.per])
                                    for i in range(0, len(pos), self.per)), 1, 0)


def mlp(device="cpu"):
    tj.manual_seed(3)
    return tj.nn.Sequential(tj.nn.Linear(5, 32, dtype=tj.float64), tj.nn.Tanh(),
                            tj.nn.Linear(32, 32, dtype=tj.float64), tj.nn.Tanh(),
                            tj.nn.Linear(32, 1, dtype=tj.float64)).to(device)


def check(device):
    model = mlp(device)
    model.compile()
    x = tj.tensor(np.random.default_rng(0).standard_normal((7, 5)), device=device)
    plain = grads(model, x)
    # reverse registration order, as DDP's buckets: the output layer's gradients first
    syncer = AllInBuckets(list(model.parameters())[::-1], per=2)
    for _ in range(2):                  # the rebuilt executable is made once, then reused
        synced = grads(model, x, syncer)
        for a, b in zip(plain, synced):
            np.testing.assert_array_equal(a, b)
    assert syncer.plans == 2
    exes = [e for e in grad_sync.all_variants() if e.graph.name.endswith("_sync")]
    assert exes, "no rebuilt backward"
    return exes[-1]


def test_rebuilt_backward_gives_the_plain_gradients_and_starts_buckets_early():
    exe = check("cpu")
    kinds = [st.kernel.instr.prim.name if st.kind == "extern" else st.kind
             for st in exe.program.steps]
    starts = [i for i, k in enumerate(kinds) if k == "dist_all_reduce_start"]
    waits = [i for i, k in enumerate(kinds) if k == "dist_all_reduce_wait"]
    assert len(starts) == 3 and len(waits) == 3, kinds
    # bucket 0 (the output layer) starts while the earlier layers' gradients are to come
    assert any(k in ("seg", "par", "matmul") for k in kinds[starts[0] + 1:starts[-1]]), kinds
    assert max(starts) < min(waits), kinds


def test_sync_graph_places_each_start_after_its_buckets_last_gradient():
    def f(w1, w2, x):
        return (tj.tanh(x @ w1) @ w2).sum()
    g = tj.compile(tj.grad(f, argnums=(0, 1))).lower(
        tj.ones(3, 4), tj.ones(4, 2), tj.ones(5, 3)).graph
    plan = grad_sync.Plan(((1,), (0,)), 1, 0)
    new = grad_sync.sync_graph(g, plan)
    names = [ins.prim.name for ins in new.instrs]
    assert names.count("dist_all_reduce_start") == 2
    made = {ins.out: k for k, ins in enumerate(new.instrs)}
    outs = new.outputs
    first = names.index("dist_all_reduce_start")
    assert made[outs[1]] < first < made[outs[0]], names   # w2's start precedes w1's gradient
    assert len(outs) == len(g.outputs) + 2
    assert new.instrs[first].params == {"op": 1}


@pytest.mark.gpu
@pytest.mark.skipif(not tj.cuda_available(), reason="needs an NVIDIA GPU and CuPy")
def test_rebuilt_backward_on_gpu():
    check("cuda")
