"""The compiled DDP training step's gradients and MPI's all-reduce algorithm (#16).

- In a compiled step, `.grad` is a new value computed from the reduced bucket (a copy, as
  DistributedDataParallel's default eagerly), not a view of it: an in-place change of a view
  writes its base, and each `p.grad.mul_(c)` of clip_grad_norm_ was a pass over the whole
  bucket. The division by the world size is done by the kernels reading `.grad` (eagerly,
  by the copy into `.grad`: the bucket is summed over ranks, not averaged in a pass of its
  own).
- Under a launcher, Open MPI's nonblocking all-reduce uses recursive doubling (one exchange on
  2 ranks) instead of libnbc's in-place default, a reduce then a broadcast."""
import re

import numpy as np
import pytest

import tracejit as tj
from tracejit.distributed.mpi_backend import mca_defaults
from tracejit.nn.parallel import DistributedDataParallel as DDP

ALG = "OMPI_MCA_coll_libnbc_iallreduce_algorithm"


def test_mca_defaults_under_a_launcher_pick_recursive_doubling():
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"):
        env = {var: "2"}
        mca_defaults(env)
        assert env == {var: "2", ALG: "4"}


def test_mca_defaults_keep_the_users_choice():
    env = {"OMPI_COMM_WORLD_SIZE": "8", ALG: "1"}
    mca_defaults(env)
    assert env[ALG] == "1"


def test_the_launcher_sets_recursive_doubling_for_mpiexec(monkeypatch):
    """The setting goes into mpiexec's environment too (a script importing mpi4py.MPI before
    init_process_group initializes MPI before mca_defaults runs); a user's value is kept."""
    from tracejit.distributed import run as launcher
    monkeypatch.setattr(launcher, "is_open_mpi", lambda mpiexec: True)
    monkeypatch.delenv(ALG, raising=False)
    cmd, env = launcher.build(2, ["train.py"], "mpiexec", [], None)
    assert cmd[-3:] == ["-m", "mpi4py", "train.py"] and env[ALG] == "4"
    monkeypatch.setenv(ALG, "1")
    assert launcher.build(2, ["train.py"], "mpiexec", [], None)[1][ALG] == "1"


def test_mca_defaults_of_a_singleton_skip_the_network_probe_only():
    env: dict = {}
    mca_defaults(env)
    assert env == {"OMPI_MCA_btl": "^ofi"}


def _net():
    tj.manual_seed(3)
    return tj.nn.Sequential(tj.nn.Linear(6, 32), tj.nn.Tanh(), tj.nn.Linear(32, 32),
                            tj.nn.Tanh(), tj.nn.Linear(32, 3))


def _batches():
    rng = np.random.default_rng(5)
    return [(rng.standard_normal((8, 6)).astype(np.float32),
             rng.standard_normal((8, 3)).astype(np.float32)) for _ in range(4)]


def _train(as_view: bool, compiled: bool):
    model = _net()
    ddp = DDP(model, bucket_cap_mb=1 / 512, gradient_as_bucket_view=as_view)
    opt = tj.optim.AdamW(ddp.parameters(), lr=0.01, weight_decay=0.1)

    def step(x, y):
        opt.zero_grad()
        loss = ((ddp(x) - y) ** 2).mean()
        loss.backward()
        tj.nn.utils.clip_grad_norm_(model.parameters(), 0.05)   # clips: the norm is larger
        opt.step()
        return loss

    run = tj.compile(step) if compiled else step
    for x, y in _batches():
        run(tj.tensor(x), tj.tensor(y))
    return model, ddp, run


@pytest.mark.parametrize("as_view", [False, True])
def test_compiled_ddp_step_with_clipping_equals_eager(world_of_one, as_view):
    got, ddp, _ = _train(as_view, compiled=True)
    assert len(ddp.reducer.buckets) >= 2
    want, _, _ = _train(as_view, compiled=False)
    for (n, p), q in zip(got.named_parameters(), want.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=2e-5,
                                   atol=1e-6, err_msg=n)
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=2e-5, atol=1e-7,
                                   err_msg=n)


def test_compiled_ddp_step_grads_are_not_views_of_the_bucket(world_of_one):
    """No kernel of the step scatters into a whole bucket: clip_grad_norm_'s in-place
    `mul_` of each `.grad` reads the reduced bucket and writes a gradient of its own."""
    _, ddp, step = _train(False, compiled=True)
    x, y = _batches()[0]
    kernels = step.lower(tj.tensor(x), tj.tensor(y)).kernels
    sizes = {int(sum(b.numels)) for b in ddp.reducer.buckets}
    assert kernels.count("dist_bucket_wait") == len(sizes) >= 2
    whole = [ln for ln in kernels.splitlines()
             if "scatter" in ln and int(re.search(r"\[(\d+)\]", ln).group(1)) in sizes]
    assert not whole, "\n".join(whole)


@pytest.mark.parametrize("as_view, dtype, op", [(False, tj.float32, "SUM"),
                                                 (True, tj.float32, "AVG"),
                                                 (False, tj.float16, "AVG")])
def test_eager_buckets_sum_and_the_write_back_divides(world_of_one, monkeypatch, as_view,
                                                      dtype, op):
    """Eagerly a float32/float64 bucket is summed over ranks and `.grad` is its copy divided
    by the world size (one pass where AVG made two); gradient_as_bucket_view (`.grad` is the
    bucket) and float16 (the sum could overflow) keep AVG."""
    from tracejit.distributed import collectives
    from tracejit.nn.parallel import reducer
    ops = []
    real = collectives.all_reduce

    def logged(t, op=None, **kw):
        ops.append(op.name)
        return real(t, op, **kw)
    monkeypatch.setattr(reducer.C, "all_reduce", logged)
    tj.manual_seed(1)
    model = tj.nn.Linear(4, 3, dtype=dtype)
    ref = tj.nn.Linear(4, 3, dtype=dtype)
    ref.load_state_dict(model.state_dict())
    ddp = DDP(model, bucket_cap_mb=1 / 8192, gradient_as_bucket_view=as_view)
    x = tj.tensor(np.random.default_rng(0).standard_normal((5, 4))).to(dtype)
    (ddp(x) ** 2).sum().backward()
    (ref(x) ** 2).sum().backward()
    assert ops and set(ops) == {op}, ops
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())
