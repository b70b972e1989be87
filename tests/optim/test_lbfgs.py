"""tj.optim.LBFGS against torch.optim.LBFGS from the same start: the parameters after each
step, the losses step() returns and the counters (func_evals, n_iter), on least squares and
L2-regularised logistic regression in float64 (to ~1e-13), with and without the strong-Wolfe
line search, short histories and max_iter; float32 close; a state_dict round trip (also
torch's state_dict loaded into tracejit) continues the same trajectory; misuse raises."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(0)
A = RNG.standard_normal((20, 4))
Y = (RNG.random(20) > 0.5).astype(np.float64)
B = RNG.standard_normal(20)


def _problem(lib, kind, dtype="float64", params=None):
    d = getattr(lib, dtype)
    w, c = params or (lib.tensor(np.zeros(n), dtype=d, requires_grad=True) for n in (4, 1))
    a, y, b = (lib.tensor(v, dtype=d) for v in (A, Y, B))

    def loss_fn():
        z = a @ w + c
        if kind == "squares":
            return ((z - b) ** 2).mean()
        if kind == "rosenbrock":              # the zoom phase of the line search runs here
            return (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2 + (c ** 2).sum()
        return (lib.log(1 + lib.exp(z)) - y * z).mean() + 0.01 * (w * w).sum()
    return [w, c], loss_fn


def _run(lib, kind, steps, dtype="float64", opt=None, params=None, **kw):
    params, loss_fn = _problem(lib, kind, dtype, params)
    opt = opt or (torch.optim.LBFGS if lib is torch else tj.optim.LBFGS)(params, **kw)

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss
    traj = []
    for _ in range(steps):
        loss = opt.step(closure)
        traj.append(np.concatenate([p.detach().numpy().ravel() for p in params] +
                                   [[float(loss.detach())]]))
    st = opt.state[params[0]]
    return np.array(traj), (st["func_evals"], st["n_iter"]), opt


@pytest.mark.parametrize("ls", [None, "strong_wolfe"])
def test_trajectories_match_torch(ls):
    for kind, kw in (("squares", {}), ("logistic", dict(max_iter=3, history_size=2)),
                     ("logistic", dict(lr=0.5, max_iter=7)), ("rosenbrock", dict(max_iter=9))):
        want, counts, _ = _run(torch, kind, 4, line_search_fn=ls, **kw)
        got, tj_counts, _ = _run(tj, kind, 4, line_search_fn=ls, **kw)
        # (Rosenbrock's curvature amplifies the last bits torch's fused multiply-adds round)
        tol = 1e-9 if kind == "rosenbrock" else 1e-11
        np.testing.assert_allclose(got, want, rtol=tol, atol=1e-13, err_msg=f"{kind} {kw}")
        assert tj_counts == counts, (kind, kw)
    want, _, _ = _run(torch, "logistic", 2, "float32", line_search_fn=ls)
    got, _, _ = _run(tj, "logistic", 2, "float32", line_search_fn=ls)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_state_dict_round_trip_continues_the_trajectory():
    kw = dict(max_iter=3, history_size=3, line_search_fn="strong_wolfe")
    want, _, _ = _run(torch, "logistic", 4, **kw)
    first, counts, opt = _run(tj, "logistic", 2, **kw)
    _, _, topt = _run(torch, "logistic", 2, **kw)
    sd = opt.state_dict()
    assert sd["param_groups"][0]["history_size"] == 3
    assert (sd["state"][0]["func_evals"], sd["state"][0]["n_iter"]) == counts
    assert len(sd["state"][0]["old_dirs"]) == len(topt.state_dict()["state"][0]["old_dirs"])
    for source in ("tracejit", "torch"):
        if source == "torch":
            sd = topt.state_dict()
        params, _ = _problem(tj, "logistic")
        with tj.no_grad():
            for p, v in zip(params, np.split(first[-1][:-1], [4])):
                p.copy_(tj.tensor(v))
        fresh = tj.optim.LBFGS(params, **kw)
        fresh.load_state_dict(sd)
        rest, _, _ = _run(tj, "logistic", 2, opt=fresh, params=params)
        np.testing.assert_allclose(rest, want[2:], rtol=1e-11, atol=1e-13, err_msg=source)


def test_misuse_raises():
    w = tj.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="parameter groups"):
        tj.optim.LBFGS([{"params": [w]}, {"params": [tj.zeros(1, requires_grad=True)]}])
    with pytest.raises(ValueError, match="line_search_fn"):
        tj.optim.LBFGS([w], line_search_fn="armijo")
    with pytest.raises(ValueError, match="learning rate"):
        tj.optim.LBFGS([w], lr=-1)
    opt = tj.optim.LBFGS([w])
    with pytest.raises(RuntimeError, match="closure"):
        opt.step(None)

    @tj.compile
    def compiled_step(x):
        opt.step(lambda: (w * x).sum())
        return x

    with pytest.raises(RuntimeError, match="runs eagerly"):
        compiled_step(tj.ones(2))
