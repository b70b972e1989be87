"""tj.Tensor is one class whose body lists its methods (tracer/tensor.py) over the data and
autograd core TensorBase (tracer/tensor_base.py), which the op modules construct through."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn
from tracejit.tracer import tensor_base
from tracejit.tracer.tensor_base import SUBCLASSES, TensorBase


def test_the_base_constructs_the_registered_class():
    t = TensorBase(np.arange(3.0))
    assert type(t) is tj.Tensor and isinstance(t, TensorBase)
    assert tensor_base._final is tj.Tensor and tj.Tensor in SUBCLASSES
    np.testing.assert_array_equal((t * 2).numpy(), [0.0, 2.0, 4.0])


def test_a_second_tensor_class_cannot_be_registered():
    class Other(TensorBase):
        __slots__ = ()
    with pytest.raises(RuntimeError, match="already registered"):
        tensor_base.register(Other)
    tensor_base.register(tj.Tensor)         # the same class again is harmless


def test_op_results_are_plain_tensors_also_from_parameters():
    p = nn.Parameter(tj.tensor(np.ones((2, 3), np.float32)))
    for out in (p * 2, p.sum(), p.T, p[0], p.reshape(3, 2), p.detach(), p.data, tj.exp(p),
                p.double(), p.clone()):
        assert type(out) is tj.Tensor
    assert p.float() is p          # already float32: itself, as torch
    assert type(p) is nn.Parameter and type(p) in SUBCLASSES


def test_hash_is_identity_and_eq_is_elementwise():
    # the class body defines __eq__, which would drop the inherited __hash__ without the
    # explicit one
    x, y = tj.tensor([1.0, 2.0]), tj.tensor([1.0, 3.0])
    assert {x: 1, y: 2}[x] == 1 and hash(x) == id(x)
    np.testing.assert_array_equal((x == y).numpy(), [True, False])


@pytest.mark.parametrize("clone", [pickle.loads, copy.deepcopy])
def test_pickle_and_deepcopy_keep_the_class(clone):
    x = tj.tensor(np.arange(4.0).reshape(2, 2), requires_grad=True)
    p = nn.Parameter(tj.tensor(np.ones(3, np.float32)))
    for t in (x, p):
        c = clone(pickle.dumps(t)) if clone is pickle.loads else clone(t)
        assert type(c) is type(t) and c is not t
        assert c.requires_grad == t.requires_grad
        np.testing.assert_array_equal(c.detach().numpy(), t.detach().numpy())


def test_a_user_subclass_of_tensor_works_with_ops_and_compile():
    class Tagged(tj.Tensor):
        def __init__(self, data, tag: str = "") -> None:
            super().__init__(np.asarray(data))
            self.tag = tag

    t = Tagged([1.0, 2.0, 3.0], tag="a")
    assert type(t) is Tagged and t.tag == "a" and isinstance(t, tj.Tensor)
    assert type(t) in SUBCLASSES                 # fast paths take it without isinstance
    assert type(t + 1) is tj.Tensor
    np.testing.assert_allclose((t * t).sum().item(), 14.0)
    f = tj.compile(lambda a: tj.tanh(a) * 2)
    np.testing.assert_allclose(f(t).numpy(), np.tanh([1.0, 2.0, 3.0]) * 2, rtol=1e-6)


def test_methods_are_the_class_bodys_and_views_record_their_base():
    x = tj.tensor(np.arange(6.0).reshape(2, 3))
    for name in ("__add__", "add_", "reshape", "view", "T", "detach", "data", "float", "to",
                 "sort", "multinomial", "register_post_accumulate_grad_hook", "__tj_bind__"):
        assert name in vars(tj.Tensor), name
    v = x.T
    v.mul_(10)          # in place on a view writes through to its base (views.py)
    np.testing.assert_array_equal(x.numpy(), np.arange(6.0).reshape(2, 3) * 10)
    d = x.data
    x.data = tj.tensor(np.zeros((2, 3)))     # the setter: x takes new storage, d keeps the old
    np.testing.assert_array_equal(d.numpy(), np.arange(6.0).reshape(2, 3) * 10)
    np.testing.assert_array_equal(x.numpy(), np.zeros((2, 3)))
