"""A compiled module's forward that stores a tensor it makes as its own attribute (llama2.c's
`self.last_loss = F.cross_entropy(...)`, read by the loop as `model.last_loss`) keeps its trace:
every call sets the attribute to a new tensor with the call's value and autograd history, as
the eager forward does (tracer/attr_slots.py). A tensor also held elsewhere, or an attribute
the forward reads before replacing it, still traces again each call (and says so); a plain
tensor attribute the forward reads and that is rebound between calls is read afresh."""
import copy
import warnings

import numpy as np
import pytest

import tracejit as tj


class LastLoss(tj.nn.Module):
    def __init__(self, keep=False):
        super().__init__()
        self.lin = tj.nn.Linear(3, 2)
        self.last_loss = None
        self.keep = keep
        self.history = []

    def forward(self, x, y):
        out = self.lin(x)
        self.last_loss = ((out - y) ** 2).mean()
        if self.keep:                         # held by a list too: an escape
            self.history.append(self.last_loss)
        return out


def _data():
    rng = np.random.default_rng(0)
    return tj.tensor(rng.standard_normal((4, 3))), tj.tensor(rng.standard_normal((4, 2)))


def _train(model, forward, steps=4):
    x, y = _data()
    losses, kept = [], []
    for _ in range(steps):
        forward(x, y)
        loss = model.last_loss
        kept.append(loss)
        loss.backward()
        with tj.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
                p.grad = None
        losses.append(loss.item())
    return losses, kept


def test_compiled_module_sets_last_loss_every_call_from_one_trace():
    tj.manual_seed(0)
    model = LastLoss().double()
    eager = copy.deepcopy(model)
    forward = tj.compile(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got, kept = _train(model, forward)
    want, _ = _train(eager, eager)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert want[-1] < want[0]
    # one trace; each call's loss is its own tensor (the first call's keeps its value)
    assert forward.cache_info().misses == 1 and forward.cache_info().hits == 3
    assert len({id(t) for t in kept}) == 4
    np.testing.assert_allclose([t.item() for t in kept], want, rtol=1e-12)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.detach().numpy(), dict(eager.named_parameters())[name]
                                   .detach().numpy(), rtol=1e-12, err_msg=name)
    # under no_grad the attribute is a plain tensor
    with tj.no_grad():
        forward(*_data())
    assert not model.last_loss.requires_grad and model.last_loss.grad_fn is None


def test_compiled_step_reading_last_loss_traces_once():
    tj.manual_seed(1)
    model = LastLoss().double()
    eager = copy.deepcopy(model)

    def make_step(m):
        opt = tj.optim.SGD(m.parameters(), lr=0.1)

        def step(x, y):
            m(x, y)
            loss = m.last_loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss
        return step
    x, y = _data()
    compiled = tj.compile(make_step(model))
    eager_step = make_step(eager)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = [compiled(x, y).item() for _ in range(4)]
    want = [eager_step(x, y).item() for _ in range(4)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(model.last_loss.item(), eager.last_loss.item(), rtol=1e-12)
    assert compiled.cache_info().misses == 1


def test_a_tensor_also_kept_elsewhere_still_traces_again_and_says_so():
    tj.manual_seed(2)
    model = LastLoss(keep=True).double()
    eager = copy.deepcopy(model)
    forward = tj.compile(model)
    with pytest.warns(UserWarning, match="every call stores tensors"):
        got, _ = _train(model, forward)
    want, _ = _train(eager, eager)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose([t.item() for t in model.history], want, rtol=1e-12)
    assert model.history[-1] is model.last_loss


class Running(tj.nn.Module):
    def __init__(self):
        super().__init__()
        self.total = tj.zeros(3)
        self.scale = tj.ones(3)

    def forward(self, x):
        self.total = self.total + x * self.scale
        return self.total * 2


def test_an_attribute_read_then_replaced_and_one_rebound_between_calls_are_read_afresh():
    model = Running()
    forward = tj.compile(model)
    x = np.arange(3, dtype=np.float32)
    want_total = np.zeros(3, np.float32)
    with pytest.warns(UserWarning, match="every call stores tensors"):
        for k in range(4):
            if k == 2:              # a plain tensor attribute rebound between calls
                model.scale = tj.full((3,), 3.0)
            want_total = want_total + x * (3.0 if k >= 2 else 1.0)
            out = forward(tj.tensor(x))
            np.testing.assert_array_equal(out.numpy(), want_total * 2)
            np.testing.assert_array_equal(model.total.numpy(), want_total)


def test_a_plain_tensor_attribute_rebound_between_calls_of_a_kept_trace():
    class Shift(tj.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = tj.ones(3)

        def forward(self, x):
            return x + self.c
    model = Shift()
    forward = tj.compile(model)
    x = tj.zeros(3)
    np.testing.assert_array_equal(forward(x).numpy(), np.ones(3))
    model.c = tj.full((3,), 5.0)
    np.testing.assert_array_equal(forward(x).numpy(), np.full(3, 5.0))
    model.c.add_(1)                   # updated in place: the same tensor, read each call
    np.testing.assert_array_equal(forward(x).numpy(), np.full(3, 6.0))
    assert forward.cache_info().misses == 2


class Cache(tj.nn.Module):
    def __init__(self):
        super().__init__()
        self.cache = tj.zeros(4)

    def forward(self, x):
        self.cache[:2] = x                  # Meta's KV cache: written in place
        return self.cache.sum()


class Block(tj.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Cache()

    def forward(self, x):
        return self.inner.forward(x) * 2    # a child's forward called directly (llama2.c)


def test_a_submodule_cache_written_in_place_and_rebound_between_calls():
    model = Block()
    forward = tj.compile(model)
    x = tj.ones(2)
    assert forward(x).item() == 4.0 and forward(x).item() == 4.0
    assert forward.cache_info().misses == 1
    np.testing.assert_array_equal(model.inner.cache.numpy(), [1, 1, 0, 0])
    model.inner.cache = tj.full((4,), 10.0)      # a fresh cache: read afresh, not the old one
    assert forward(x).item() == 2 * (1 + 1 + 10 + 10)
    np.testing.assert_array_equal(model.inner.cache.numpy(), [1, 1, 10, 10])
