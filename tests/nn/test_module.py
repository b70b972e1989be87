"""nn.Module, Parameter and the containers against torch.nn's behaviour."""
import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch

import tracejit as tj
from tracejit import nn
from conftest import assert_close


# the same model in both libraries, so names, orders and reprs can be compared
def make(lib):
    class Block(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = lib.nn.LayerNorm(8)
            self.fc = lib.nn.Linear(8, 8)
            self.drop = lib.nn.Dropout(0.25)
            self.register_buffer("scale", lib.ones(8))
            self.register_buffer("cache", lib.zeros(3), persistent=False)

        def forward(self, x):
            return x + self.drop(lib.nn.functional.relu(self.fc(self.ln(x)))) * self.scale

    class Net(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = lib.nn.Embedding(10, 8)
            self.blocks = lib.nn.ModuleList([Block(), Block()])
            self.head = lib.nn.Linear(8, 10, bias=False)
            self.head.weight = self.emb.weight          # tied, as GPT-2

        def forward(self, idx):
            x = self.emb(idx)
            for b in self.blocks:
                x = b(x)
            return self.head(x)
    return Net()


def torch_to_tj(tmodel, model):
    model.load_state_dict({k: v.detach().numpy() for k, v in tmodel.state_dict().items()})


def test_names_orders_and_tied_weights_match_torch():
    tm, m = make(torch), make(tj)
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in tm.named_parameters()]
    assert [n for n, _ in m.named_parameters(remove_duplicate=False)] == \
        [n for n, _ in tm.named_parameters(remove_duplicate=False)]
    assert "head.weight" not in dict(m.named_parameters())       # de-duplicated
    assert len(list(m.parameters())) == len(list(tm.parameters()))
    assert [n for n, _ in m.named_buffers()] == [n for n, _ in tm.named_buffers()]
    assert list(m.state_dict().keys()) == list(tm.state_dict().keys())   # both tied names
    assert "blocks.0.cache" not in m.state_dict()                 # non-persistent
    assert [n for n, _ in m.named_modules()] == [n for n, _ in tm.named_modules()]
    assert [n for n, _ in m.named_children()] == [n for n, _ in tm.named_children()]
    assert [type(c).__name__ for c in m.modules()] == [type(c).__name__ for c in tm.modules()]
    assert repr(m) == repr(tm)


def test_loaded_torch_state_dict_gives_torch_outputs_and_grads():
    tm, m = make(torch).double(), make(tj).double()
    torch_to_tj(tm, m)
    tm.eval(), m.eval()
    idx = np.array([[1, 2, 3, 9], [0, 0, 5, 7]])
    ty = tm(torch.tensor(idx))
    y = m(tj.tensor(idx))
    assert_close(y, ty.detach().numpy(), 1e-12, 1e-12)
    w = np.random.default_rng(0).standard_normal(ty.shape)
    (ty * torch.tensor(w)).sum().backward()
    (y * tj.tensor(w)).sum().backward()
    for (n, p), (tn, tp) in zip(m.named_parameters(), tm.named_parameters()):
        assert n == tn
        assert_close(p.grad, tp.grad.numpy(), 1e-10, 1e-12)


def test_compiled_forward_and_grad_match_eager():
    m = make(tj)
    m.eval()
    idx = tj.tensor(np.array([[1, 2, 3], [4, 5, 6]]))
    y = m(idx)
    (y * y).sum().backward()
    eager = {n: p.grad.numpy().copy() for n, p in m.named_parameters()}
    m.zero_grad()
    f = tj.compile(m)
    yc = f(idx)
    assert_close(yc, y, 1e-5, 1e-6)
    (yc * yc).sum().backward()
    for n, p in m.named_parameters():
        assert_close(p.grad, eager[n], 1e-4, 1e-5)
    # a parameter updated in place is read afresh by the next compiled call
    with tj.no_grad():
        m.head.weight.mul_(2.0)
    assert_close(f(idx), m(idx), 1e-5, 1e-6)


def test_grad_transform_through_a_module():
    lin = nn.Linear(3, 2).double()
    x = tj.randn(4, 3, dtype=tj.float64)
    g = tj.grad(lambda x: (lin(x) ** 2).sum())(x)
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    expect = 2 * (x.numpy() @ w.T + b) @ w
    assert_close(g, expect, 1e-12, 1e-12)


def test_attribute_registration_rules():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(tj.ones(2))
            self.sub = nn.Linear(2, 2)
            self.register_buffer("b", tj.zeros(2))
            self.plain = tj.ones(1)             # a plain tensor attribute is not registered
    m = M()
    assert set(m._parameters) == {"w"} and set(m._modules) == {"sub"}
    assert set(m._buffers) == {"b"} and "plain" not in m.state_dict()
    with pytest.raises(TypeError, match="cannot assign 'tracejit.Tensor' as parameter 'w'"):
        m.w = tj.ones(2)
    m.w = None
    assert m.w is None and "w" not in m.state_dict()
    assert [n for n, _ in m.named_parameters()] == ["sub.weight", "sub.bias"]
    m.b = tj.full((2,), 3.0)                    # reassigning a buffer keeps it a buffer
    assert_close(m.state_dict()["b"], [3.0, 3.0])
    with pytest.raises(TypeError, match="as buffer 'b'"):
        m.b = 5
    with pytest.raises(TypeError, match="as child module 'sub'"):
        m.sub = 5
    del m.sub
    assert "sub" not in m._modules and not hasattr(m, "sub")
    m.sub = nn.Parameter(tj.ones(1))            # a name can change kind
    assert "sub" in m._parameters
    with pytest.raises(KeyError, match="contain"):
        m.register_buffer("a.b", tj.ones(1))
    with pytest.raises(KeyError, match="attribute 'plain' already exists"):
        m.register_buffer("plain", tj.ones(1))
    with pytest.raises(TypeError, match="nn.Parameter or None required"):
        m.register_parameter("q", tj.ones(1))
    with pytest.raises(AttributeError, match="'M' object has no attribute 'nope'"):
        m.nope
    with pytest.raises(TypeError, match="is not a Module subclass"):
        m.add_module("x", 3)

    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(tj.ones(1))
    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()


def test_non_leaf_parameter_is_refused():
    x = tj.ones(2, requires_grad=True)
    p = nn.Parameter(tj.ones(2))
    p.grad_fn = (x * 2).grad_fn          # what torch rejects: a computed tensor as a parameter
    m = nn.Module()
    with pytest.raises(ValueError, match="non-leaf Tensor"):
        m.register_parameter("w", p)


def test_parameter_is_a_tensor():
    p = nn.Parameter(tj.tensor([1.0, 2.0]))
    assert isinstance(p, tj.Tensor) and isinstance(p, nn.Parameter)
    assert p.requires_grad and p.is_leaf
    assert repr(p).startswith("Parameter containing:\ntensor([1., 2.]")
    q = p * 2
    assert type(q) is tj.Tensor                 # results are plain tensors
    assert not nn.Parameter(tj.ones(1), requires_grad=False).requires_grad
    t = tj.zeros(3)
    shared = nn.Parameter(t)
    with tj.no_grad():
        shared.add_(1.0)
    assert_close(t, [1.0, 1.0, 1.0])            # shares storage with the tensor, as torch
    p.foo = "attribute"                         # ad-hoc attributes, as on torch Parameters
    assert p.foo == "attribute"


def test_train_eval_and_dropout():
    m = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    assert m.training and m[1].training
    assert m.eval() is m and not m[1].training
    x = tj.ones(64, 4)
    assert_close(m(x), m[0](x))                 # identity in eval
    m.train()
    out = m(x).detach().numpy()
    ref = m[0](x).detach().numpy()
    dropped = out == 0
    assert 0.3 < dropped.mean() < 0.7
    assert_close(out[~dropped], 2 * ref[~dropped])
    with pytest.raises(ValueError, match="boolean"):
        m.train("no")


def test_zero_grad_set_to_none_semantics():
    m = nn.Linear(3, 2)
    m(tj.ones(1, 3)).sum().backward()
    g = m.weight.grad
    m.zero_grad(set_to_none=False)
    assert m.weight.grad is g                   # the same tensor, zeroed
    assert_close(g, np.zeros((2, 3)))
    m.zero_grad()
    assert m.weight.grad is None and m.bias.grad is None


def test_to_dtype_keeps_parameter_objects():
    m = nn.Linear(3, 2)
    m.register_buffer("steps", tj.tensor(np.array([1, 2])))
    w = m.weight
    m(tj.ones(1, 3)).sum().backward()
    assert m.to(tj.float64) is m
    assert m.weight is w and w.dtype is tj.float64 and w.grad.dtype is tj.float64
    assert isinstance(m.weight, nn.Parameter) and m.weight.requires_grad
    assert m.steps.dtype is tj.int64            # only floating tensors change dtype
    m.float()
    assert m.weight.dtype is tj.float32
    m.half()
    assert m.bias.dtype is tj.float16
    m.to(tj.zeros(1, dtype=tj.float64))
    assert m.weight.dtype is tj.float64
    m.bfloat16().double()
    assert m.weight.dtype is tj.float64
    m.to("cpu")
    with pytest.raises(TypeError, match="floating point"):
        m.to(tj.int32)


def test_state_dict_values_and_round_trip():
    m = make(tj)
    sd = m.state_dict()
    assert isinstance(sd, OrderedDict)
    assert all(type(v) is tj.Tensor and not v.requires_grad for v in sd.values())
    assert all(isinstance(v, nn.Parameter) for k, v in m.state_dict(keep_vars=True).items()
               if "scale" not in k)
    m2 = make(tj)
    res = m2.load_state_dict(sd)
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert repr(res) == "<All keys matched successfully>"
    idx = tj.tensor(np.array([[1, 2]]))
    m.eval(), m2.eval()
    assert_close(m2(idx), m(idx))
    # values are copied into the existing storage: the parameters stay the same objects
    w = m2.emb.weight
    m2.load_state_dict({k: v.numpy() for k, v in sd.items()})
    assert m2.emb.weight is w


def test_load_state_dict_errors_match_torch():
    tm, m = make(torch), make(tj)
    sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    del sd["blocks.1.fc.bias"]
    sd["blocks.0.extra"] = np.zeros(1)
    sd["nothere.weight"] = np.zeros(1)
    with pytest.raises(RuntimeError) as te:
        tm.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
    with pytest.raises(RuntimeError) as e:
        m.load_state_dict(sd)
    assert str(e.value) == str(te.value)
    res = m.load_state_dict(sd, strict=False)
    tres = tm.load_state_dict({k: torch.tensor(v) for k, v in sd.items()}, strict=False)
    assert res.missing_keys == tres.missing_keys
    assert res.unexpected_keys == tres.unexpected_keys
    bad = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    bad["head.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(RuntimeError, match=r"size mismatch for head.weight: copying a param "
                       r"with shape \[3, 3\] from checkpoint, the shape in current model is "
                       r"\[10, 8\]"):
        m.load_state_dict(bad)
    with pytest.raises(TypeError, match="dict-like"):
        m.load_state_dict([1, 2])


def test_forward_hooks():
    m = nn.Linear(2, 2)
    calls = []
    h1 = m.register_forward_pre_hook(lambda mod, args: (args[0] * 0,))
    h2 = m.register_forward_hook(lambda mod, args, out: calls.append(out.shape) or out + 1)
    y = m(tj.ones(3, 2))
    assert calls == [(3, 2)]
    assert_close(y, m.bias.detach().numpy()[None].repeat(3, 0) + 1)
    h1.remove(), h2.remove()
    assert_close(m(tj.zeros(1, 2)), m.bias.detach().numpy()[None])


def test_apply_requires_grad_and_lookup():
    m = make(tj)
    seen = []
    m.apply(lambda mod: seen.append(type(mod).__name__))
    assert seen[-1] == "Net" and seen[0] == "Embedding"          # children first
    m.requires_grad_(False)
    assert not any(p.requires_grad for p in m.parameters())
    assert m.get_submodule("blocks.1.fc") is m.blocks[1].fc
    assert m.get_parameter("blocks.1.fc.bias") is m.blocks[1].fc.bias
    assert m.get_buffer("blocks.0.scale") is m.blocks[0].scale
    with pytest.raises(AttributeError, match="has no attribute `nope`"):
        m.get_submodule("blocks.nope")
    assert len(list(m.parameters(recurse=False))) == 0
    assert len(list(m.emb.parameters(recurse=False))) == 1


def test_forward_missing_and_deepcopy():
    with pytest.raises(NotImplementedError, match='missing the required "forward"'):
        nn.Module()(tj.ones(1))
    m = nn.Linear(2, 2)
    c = copy.deepcopy(m)
    assert isinstance(c.weight, nn.Parameter) and c.weight is not m.weight
    with tj.no_grad():
        c.weight.zero_()
    assert float(abs(m.weight).sum()) > 0


def test_sequential():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    s = nn.Sequential(a, b, c)
    assert len(s) == 3 and s[0] is a and s[-1] is c and list(s) == [a, b, c]
    assert isinstance(s[1:], nn.Sequential) and list(s[1:]) == [b, c]
    x = tj.randn(4, 2)
    assert_close(s(x), c(b(a(x))))
    d = nn.Tanh()
    s.append(d)
    assert s[3] is d
    s.insert(0, nn.Identity())
    assert [type(m).__name__ for m in s] == ["Identity", "Linear", "ReLU", "Linear", "Tanh"]
    del s[0]
    assert list(s._modules) == ["0", "1", "2", "3"] and s[0] is a
    named = nn.Sequential(OrderedDict([("fc", a), ("act", b)]))
    assert named.fc is a and [n for n, _ in named.named_parameters()] == ["fc.weight", "fc.bias"]
    with pytest.raises(IndexError):
        s[10]
    t = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
    assert repr(nn.Sequential(nn.Linear(2, 3), nn.ReLU())) == repr(t)


def test_module_list():
    ls = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(ls) == 3 and len(list(ls.parameters())) == 6
    extra = nn.ReLU()
    ls.append(extra)
    assert ls.index(extra) == 3 and ls[-1] is extra
    ls.extend([nn.Tanh()])
    ls.insert(1, nn.Sigmoid())
    assert [type(m).__name__ for m in ls] == ["Linear", "Sigmoid", "Linear", "Linear", "ReLU",
                                             "Tanh"]
    assert isinstance(ls[1:3], nn.ModuleList) and len(ls[1:3]) == 2
    del ls[1]
    assert list(ls._modules) == [str(i) for i in range(5)]
    t = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)] + [torch.nn.ReLU()])
    ours = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)] + [nn.ReLU()])
    assert repr(ours) == repr(t)


def test_module_dict():
    d = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.ReLU()})
    assert list(d.keys()) == ["a", "b"] and "a" in d and len(d) == 2
    d["c"] = nn.Tanh()
    assert list(d) == ["a", "b", "c"]
    assert d.pop("b").__class__ is nn.ReLU and "b" not in d
    d.update([("e", nn.Identity())])
    assert [n for n, _ in d.named_parameters()] == ["a.weight", "a.bias"]
    assert [k for k, _ in d.items()] == ["a", "c", "e"]


def test_compiled_model_follows_train_and_eval():
    m = nn.Sequential(nn.Linear(16, 16), nn.Dropout(0.5))
    x = tj.randn(8, 16)
    f = tj.compile(m)
    assert (f(x).detach().numpy() == 0).mean() > 0.2          # dropout active
    m.eval()
    assert_close(f(x), m[0](x))                               # traced again: the identity
    m.train()
    assert (f(x).detach().numpy() == 0).mean() > 0.2
    m[1].training = False                                     # a flag set by hand counts too
    assert_close(f(x), m[0](x))
    g = tj.compile(lambda x: m(x) * 2)                        # a function calling the model
    m.train()
    assert (g(x).detach().numpy() == 0).mean() > 0.2
    m.eval()
    assert_close(g(x), m[0](x) * 2)


def test_parameter_list_and_dict():
    pl = nn.ParameterList([nn.Parameter(tj.ones(3, 4)), tj.zeros(5)])
    assert len(pl) == 2 and isinstance(pl[1], nn.Parameter) and pl[1].requires_grad
    pl.append(tj.ones(2))
    assert [n for n, _ in pl.named_parameters()] == ["0", "1", "2"]
    assert [tuple(p.shape) for p in pl] == [(3, 4), (5,), (2,)]
    assert "(1): Parameter containing: [tracejit.f32 of size 5]" in repr(pl)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.ws = nn.ParameterList([tj.ones(2), tj.ones(2) * 2])
            self.named = nn.ParameterDict({"a": tj.ones(1)})

        def forward(self, x):
            for w in self.ws:
                x = x * w
            return x * self.named["a"]
    m = M()
    assert list(m.state_dict()) == ["ws.0", "ws.1", "named.a"]
    m(tj.ones(2)).sum().backward()
    assert_close(m.ws[0].grad, [2.0, 2.0]) and None
    assert_close(m.named["a"].grad, [4.0])
    pd = m.named
    pd["b"] = nn.Parameter(tj.zeros(3))
    assert list(pd.keys()) == ["a", "b"] and "b" in pd and len(pd) == 2
    assert pd.pop("a").shape == (1,) and list(pd) == ["b"]


def test_load_state_dict_value_kinds():
    m = nn.Linear(2, 2)
    t = torch.nn.Linear(2, 2)
    m.load_state_dict(t.state_dict())            # CPU torch tensors convert through NumPy
    assert_close(m.weight, t.weight.detach().numpy())
    with pytest.raises(RuntimeError, match='While copying the parameter named "bias", expected '
                       'a Tensor or NumPy array'):
        m.load_state_dict({"weight": np.zeros((2, 2)), "bias": "zeros"})
    m.load_state_dict({"weight": np.ones((2, 2), np.float64), "bias": np.zeros(2)})
    assert m.weight.dtype is tj.float32                   # values are cast to the parameter's
    assert_close(m.weight, np.ones((2, 2)))


def test_module_compile_in_place():
    m = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
    x = tj.randn(3, 4)
    eager = m(x)
    (eager ** 2).sum().backward()
    grads = [p.grad.numpy().copy() for p in m.parameters()]
    m.zero_grad()
    assert m.compile() is None
    y = m(x)
    assert y.grad_fn.name().startswith("CompiledFunctionBackward")
    assert_close(y, eager, 1e-5, 1e-6)
    (y ** 2).sum().backward()
    for p, g in zip(m.parameters(), grads):
        assert_close(p.grad, g, 1e-4, 1e-6)
    outer = tj.compile(lambda x: m(x) * 2)          # inside another trace it inlines
    assert_close(outer(x), eager * 2, 1e-5, 1e-6)
    assert list(m.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
