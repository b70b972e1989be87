"""tj.func (torch.func's names: functional_call, grad, grad_and_value, vmap, jacrev, jacfwd,
hessian, vjp, jvp, linearize) and tj.autograd.functional (jacobian, hessian, vjp, jvp, hvp,
vhp) against torch on the same inputs: values, result structures and gradients, eagerly,
nested (per-sample gradients by vmap of grad of functional_call) and under tj.compile (the
compiled functional_call keeps one trace while the values change)."""
import numpy as np
import pytest

import tracejit as tj
import tracejit.autograd.functional as JA
from tracejit import func as TF

torch = pytest.importorskip("torch")
F = torch.func
TA = torch.autograd.functional


def _cmp(a, b):
    """torch's result a, tracejit's b: the same nesting of tuples, the same values."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for k in a:
            _cmp(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert isinstance(b, tuple) and len(a) == len(b), type(b)
        for x, y in zip(a, b):
            _cmp(x, y)
    else:
        assert isinstance(b, tj.Tensor)
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-10,
                                   atol=1e-12)


def _pair():
    t = torch.nn.Sequential(torch.nn.Linear(3, 4, dtype=torch.float64), torch.nn.Tanh(),
                            torch.nn.Linear(4, 2, dtype=torch.float64))
    j = tj.nn.Sequential(tj.nn.Linear(3, 4, dtype=tj.float64), tj.nn.Tanh(),
                         tj.nn.Linear(4, 2, dtype=tj.float64))
    j.load_state_dict({k: v.detach().numpy().copy() for k, v in t.state_dict().items()})
    return t, j


def test_functional_call_eager_grad_vmap_and_compiled():
    rng = np.random.default_rng(0)
    t, j = _pair()
    x = rng.standard_normal((5, 3))
    P = {k: rng.standard_normal(tuple(v.shape)) for k, v in t.named_parameters()}
    tp = {k: torch.tensor(v) for k, v in P.items()}
    jp = {k: tj.tensor(v) for k, v in P.items()}
    w0 = j[0].weight.detach().numpy().copy()
    _cmp(F.functional_call(t, tp, torch.tensor(x)), TF.functional_call(j, jp, tj.tensor(x)))
    assert isinstance(j[0].weight, tj.nn.Parameter)
    np.testing.assert_array_equal(j[0].weight.detach().numpy(), w0)     # put back

    def tl(p, x):
        return F.functional_call(t, p, (x,)).pow(2).sum()

    def jl(p, x):
        return TF.functional_call(j, p, (x,)).pow(2).sum()
    _cmp(F.grad(tl)(tp, torch.tensor(x)), TF.grad(jl)(jp, tj.tensor(x)))
    g, v = TF.grad_and_value(jl)(jp, tj.tensor(x))          # torch's order: (grad, value)
    _cmp(F.grad_and_value(tl)(tp, torch.tensor(x)), (g, v))
    per_sample = F.vmap(F.grad(lambda p, x: tl(p, x[None])), in_dims=(None, 0))
    per_sample_j = TF.vmap(TF.grad(lambda p, x: jl(p, x[None])), in_dims=(None, 0))
    _cmp(per_sample(tp, torch.tensor(x)), per_sample_j(jp, tj.tensor(x)))
    compiled, compiled_grad = tj.compile(jl), tj.compile(TF.grad(jl))
    for scale in (1.0, 2.0, 1.0):
        tq = {k: v * scale for k, v in tp.items()}
        jq = {k: tj.tensor(v.numpy()) for k, v in tq.items()}
        _cmp(tl(tq, torch.tensor(x)), compiled(jq, tj.tensor(x)))
        _cmp(F.grad(tl)(tq, torch.tensor(x)), compiled_grad(jq, tj.tensor(x)))
    assert compiled.cache_info().misses == 1
    np.testing.assert_array_equal(j[0].weight.detach().numpy(), w0)
    _cmp(t(torch.tensor(x)), j(tj.tensor(x)))


def test_functional_call_ties_strict_and_errors():
    lin, other = (tj.nn.Linear(2, 2, bias=False, dtype=tj.float64) for _ in range(2))
    other.weight = lin.weight
    m = tj.nn.Sequential(lin, other)                       # one weight under two names
    w = tj.tensor(np.eye(2) * 3)
    x = tj.tensor(np.ones((1, 2)))
    np.testing.assert_allclose(TF.functional_call(m, {"0.weight": w}, (x,)).numpy(), [[9, 9]])
    np.testing.assert_allclose(TF.functional_call(m, {"0.weight": w}, (x,),
                                                  tie_weights=False).detach().numpy(),
                               (x.numpy() @ w.numpy().T) @ lin.weight.detach().numpy().T)
    with pytest.raises(ValueError, match="tied"):
        TF.functional_call(m, {"0.weight": w, "1.weight": w * 1}, (x,))
    with pytest.raises(ValueError, match="multiple dictionaries"):
        TF.functional_call(m, ({"0.weight": w}, {"0.weight": w}), (x,))
    with pytest.raises(RuntimeError, match="Unexpected key.*'nope'"):
        TF.functional_call(m, {"0.weight": w, "nope": w}, (x,), strict=True)
    with pytest.raises(RuntimeError, match="Missing key"):
        TF.functional_call(tj.nn.Linear(2, 2), {"weight": w}, (x,), strict=True)
    bn = tj.nn.BatchNorm1d(2, dtype=tj.float64).eval()    # a buffer replaced
    out = TF.functional_call(bn, {"running_mean": tj.tensor([1.0, 2.0])}, (x,))
    np.testing.assert_allclose(out.detach().numpy(), [[0.0, -1.0]], atol=1e-4)
    assert bn.running_mean.numpy().tolist() == [0.0, 0.0]


def test_func_transforms_torch_conventions():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(3), rng.standard_normal(3)

    def g(x):
        return x.sin() * x, x.cos()

    for tr, jr in ((F.jacrev, TF.jacrev), (F.jacfwd, TF.jacfwd)):
        _cmp(tr(g, has_aux=True)(torch.tensor(a)), jr(g, has_aux=True)(tj.tensor(a)))
        _cmp(tr(lambda x, y: x * y.exp(), argnums=(0, 1))(torch.tensor(a), torch.tensor(b)),
             jr(lambda x, y: x * y.exp(), argnums=(0, 1))(tj.tensor(a), tj.tensor(b)))
    _cmp(F.hessian(lambda x: (x ** 3).prod())(torch.tensor(a)),
         TF.hessian(lambda x: (x ** 3).prod())(tj.tensor(a)))
    _cmp(F.grad(lambda x: ((x ** 2).sum(), x.sin()), has_aux=True)(torch.tensor(a)),
         TF.grad(lambda x: ((x ** 2).sum(), x.sin()), has_aux=True)(tj.tensor(a)))

    def f(x, y):
        return x.sin() * y, (x * y).sum()
    out_t, fn_t = F.vjp(f, torch.tensor(a), torch.tensor(b))
    out_j, fn_j = TF.vjp(f, tj.tensor(a), tj.tensor(b))
    _cmp(out_t, out_j)
    ct = rng.standard_normal(3)
    _cmp(fn_t((torch.tensor(ct), torch.tensor(0.7, dtype=torch.float64))),
         fn_j((tj.tensor(ct), tj.tensor(0.7, dtype=tj.float64))))
    _cmp(F.jvp(g, (torch.tensor(a),), (torch.tensor(b),), has_aux=True),
         TF.jvp(g, (tj.tensor(a),), (tj.tensor(b),), has_aux=True))
    out_j, lin_j = TF.linearize(tj.sin, tj.tensor(a))    # (torch's linearize: jvp's values)
    _cmp(F.jvp(torch.sin, (torch.tensor(a),), (torch.tensor(b),)), (out_j, lin_j(tj.tensor(b))))
    with pytest.raises(TypeError, match="tuples"):
        TF.jvp(tj.sin, tj.tensor(a), tj.tensor(b))


def test_autograd_functional_matches_torch():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal(3)

    def f(x, y):
        return (x.sin() * y).sum(0) * y.exp(), (x * x).sum()

    def s(x, y):
        return (x.sin() * y).sum() + (y ** 3).sum()

    def T(*xs):
        return tuple(torch.tensor(v) for v in xs)

    def J(*xs):
        return tuple(tj.tensor(v) for v in xs)
    _cmp(TA.jacobian(f, T(a, b)), JA.jacobian(f, J(a, b), vectorize=True))
    _cmp(TA.jacobian(torch.sin, T(a)[0]), JA.jacobian(tj.sin, J(a)[0]))
    _cmp(TA.hessian(s, T(a, b)), JA.hessian(s, J(a, b)))
    _cmp(TA.hessian(lambda x: (x ** 3).sum(), T(b)[0]),
         JA.hessian(lambda x: (x ** 3).sum(), J(b)[0]))
    va, vb = rng.standard_normal(3), rng.standard_normal(())
    _cmp(TA.vjp(f, T(a, b), T(va, vb)), JA.vjp(f, J(a, b), J(va, vb)))
    _cmp(TA.vjp(lambda x: (x ** 2).sum(), T(b)[0]), JA.vjp(lambda x: (x ** 2).sum(), J(b)[0]))
    _cmp(TA.jvp(f, T(a, b), T(a * 0.3, b + 1)), JA.jvp(f, J(a, b), J(a * 0.3, b + 1)))
    _cmp(TA.hvp(s, T(a, b), T(a * 0.3, b + 1)), JA.hvp(s, J(a, b), J(a * 0.3, b + 1)))
    _cmp(TA.vhp(s, T(a, b), T(a * 0.3, b + 1)), JA.vhp(s, J(a, b), J(a * 0.3, b + 1)))
    # create_graph: the product stays differentiable
    x1, x2 = torch.tensor(b, requires_grad=True), tj.tensor(b, requires_grad=True)
    TA.hvp(lambda x: (x ** 4).sum(), x1, torch.ones(3, dtype=torch.float64),
           create_graph=True)[1].sum().backward()
    JA.hvp(lambda x: (x ** 4).sum(), x2, tj.ones(3, dtype=tj.float64),
           create_graph=True)[1].sum().backward()
    _cmp(x1.grad, x2.grad)
    # inside a compiled function
    jac = tj.compile(lambda x: JA.jacobian(lambda z: z.sin() * z.sum(), x))
    _cmp(TA.jacobian(lambda z: z.sin() * z.sum(), T(b)[0]), jac(J(b)[0]))
    with pytest.raises(RuntimeError, match="independent of input 1"):
        JA.jacobian(lambda x, y: x * 2, J(a, b), strict=True)
    with pytest.raises(RuntimeError, match="single element"):
        JA.hessian(lambda x: x * 2, J(b)[0])
    with pytest.raises(RuntimeError, match="v can only be None"):
        JA.vjp(tj.sin, J(b)[0])
