"""A dtype equal to NumPy's own but another object (what unpickling makes: the disk cache of
compiled executables) must not push an eager backward off its VJP plans, and executables read
from the disk cache allocate their outputs with NumPy's own dtype objects."""
import pickle

import numpy as np
import pytest

import tracejit as tj
from tracejit.runtime import exe_cache
from tracejit.tracer import eager

torch = pytest.importorskip("torch")

F32 = np.dtype("float32")


def _other_f32() -> np.dtype:
    d = pickle.loads(pickle.dumps(F32))
    assert d == F32 and d is not F32        # (what the test is about)
    return d


def test_backward_runs_plans_on_an_equal_dtype_object(monkeypatch):
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((4, 8)).astype(np.float32)
    ys = rng.standard_normal((4, 8)).astype(np.float32)

    def step(x_np, y_np):
        x = tj.tensor(x_np, requires_grad=True)
        y = tj.tensor(y_np, requires_grad=True)
        (tj.tanh(x) * y).sum().backward()
        return x.grad.numpy(), y.grad.numpy()

    step(xs, ys)                # records the plans (canonical dtypes)
    binds = []
    real = eager.Arr.__tj_bind__
    monkeypatch.setattr(eager.Arr, "__tj_bind__",
                        lambda self, prim, args, params: (binds.append(prim.name),
                                                          real(self, prim, args, params))[1])
    other = _other_f32()
    # the same values, as arrays whose dtype is the pickled object (as a cached fused
    # composite's outputs were)
    gx, gy = step(xs.view(other), ys.view(other))
    assert binds == []          # every rule replayed its plan
    tx = torch.tensor(xs, requires_grad=True)
    ty = torch.tensor(ys, requires_grad=True)
    (torch.tanh(tx) * ty).sum().backward()
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gy, ty.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_exe_cache_entries_read_back_with_numpys_dtypes(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACEJIT_CACHE_DIR", str(tmp_path))
    spec = exe_cache.RunSpec(n_words=4, constants=[], scratch_layout=[(3, 0, (2,), F32)],
                             scratch_bytes=8, out_alloc=[(2, (4, 8), F32, 128)],
                             out_plan=[(2, False)], steps=[])
    key = "e5" + "0" * 62
    exe_cache.store(key, spec, {})
    got = exe_cache.load(key)
    assert got is not None
    spec2, _ = got
    (_, shape, d, nbytes), = spec2.out_alloc
    assert (shape, nbytes) == ((4, 8), 128) and d is F32
    assert spec2.scratch_layout[0][3] is F32


def test_lean_backward_keeps_the_users_numpy_error_mode():
    # the engine ignores NumPy's floating-point errors across the nodes it runs on arrays
    # (inf is a value: log's gradient at 0), but hooks run under the user's mode, and the
    # mode after backward is the user's
    x = tj.tensor(np.array([0.0, 1.0, 2.0]), requires_grad=True)
    w = tj.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    seen = []

    def hook(g):
        seen.append(np.geterr()["divide"])
        return g

    with np.errstate(all="raise"):
        y = tj.log(x) * w
        y.register_hook(hook)
        tj.log(y * y + 1.0).sum().backward()
        assert np.geterr()["divide"] == "raise"
    assert seen == ["raise"]
    tx = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    tw = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    torch.log((torch.log(tx) * tw) ** 2 + 1.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), equal_nan=True)
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), equal_nan=True)


def test_lean_backward_restores_the_mode_after_an_error():
    x = tj.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = tj.exp(x)
    loss = (y * y).sum()
    x2 = tj.tensor(np.array([1.0, 2.0]), requires_grad=True)
    z = x2 * 2.0
    out = (tj.exp(z) * z).sum()
    with tj.no_grad():
        z.mul_(3.0)             # a saved value changed in place: backward raises
    with np.errstate(all="warn"):
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.backward()
        assert np.geterr()["divide"] == "warn"
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp(2 * np.array([1.0, 2.0])))


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 0, 2), (1, 2, 0)])
def test_a_plan_result_shared_by_two_buffers_is_never_written(order):
    # u = x2 + y2's rule passes one gradient array on to both inputs, and each input gets a
    # second term from a node that runs later or earlier (tanh(x2), tanh(y2): which one first
    # depends on the order of the factors): a sum made in place in the shared array would
    # change the other input's gradient
    rng = np.random.default_rng(5)
    xv = rng.standard_normal((3, 8)).astype(np.float32)
    yv = rng.standard_normal((3, 8)).astype(np.float32)

    def loss(lib, x, y):
        x2, y2 = x * 1.5, y * 0.5
        u = x2 + y2
        factors = [u, lib.tanh(x2), lib.tanh(y2)]
        s = factors[order[0]] * factors[order[1]] * factors[order[2]]
        return s.sum()

    x = tj.tensor(xv, requires_grad=True)
    y = tj.tensor(yv, requires_grad=True)
    for _ in range(3):          # (the plans recorded, then replayed)
        x.grad = y.grad = None
        loss(tj, x, y).backward()
    tx = torch.tensor(xv, requires_grad=True)
    ty = torch.tensor(yv, requires_grad=True)
    loss(torch, tx, ty).backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y.grad.numpy(), ty.grad.numpy(), rtol=1e-5, atol=1e-6)
