"""torch.utils.checkpoint.checkpoint(module, x, use_reentrant=False) over real layers (HF's
gradient checkpointing): the parameters the checkpointed function reads get torch's gradients.
Before, a parameter read through a composite op (F.linear, layer_norm, softmax, ...) got
None: the recomputation's composite node hung off the original tensor, not the checkpoint's
stand-in, so the optimizer silently skipped every checkpointed Linear."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")


def _layers(lib):
    nn = lib.nn
    return {
        "linear": lambda: nn.Linear(6, 5),
        "mlp": lambda: nn.Sequential(nn.Linear(6, 12), nn.GELU(), nn.Dropout(0.0),
                                     nn.Linear(12, 6), nn.LayerNorm(6)),
        "encoder_layer": lambda: nn.TransformerEncoderLayer(6, 2, 12, dropout=0.0,
                                                            batch_first=True, norm_first=True),
        "conv": lambda: nn.Sequential(nn.Conv1d(4, 3, 3, padding=1), nn.ReLU()),
    }


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name", ["linear", "mlp", "encoder_layer", "conv"])
def test_checkpointed_layer_gets_torchs_parameter_gradients(name, compiled):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 6))
    results = []
    for lib in (torch, tj):
        lib.manual_seed(0)
        layer = _layers(lib)[name]().double()
        if lib is torch:
            state = {k: v.detach().numpy().copy() for k, v in layer.state_dict().items()}
        else:
            layer.load_state_dict(state)

        def loss_of(inp):
            h = lib.utils.checkpoint.checkpoint(layer, inp, use_reentrant=False)
            return (h * h).sum()
        if compiled and lib is tj:
            loss_of = tj.compile(loss_of)
        inp = lib.tensor(x, requires_grad=True)
        loss = loss_of(inp)
        loss.backward()
        grads = {k: p.grad for k, p in layer.named_parameters()}
        assert all(g is not None for g in grads.values()), [k for k, g in grads.items() if g is None]
        results.append((loss.item(), inp.grad.numpy(), {k: g.numpy() for k, g in grads.items()}))
    (wl, wx, wg), (gl, gx, gg) = results
    np.testing.assert_allclose(gl, wl, rtol=1e-12)
    np.testing.assert_allclose(gx, wx, rtol=1e-10, atol=1e-12)
    assert list(gg) == list(wg)
    for k in wg:
        np.testing.assert_allclose(gg[k], wg[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_checkpoint_sequential_as_torch():
    results = []
    for lib in (torch, tj):
        lib.manual_seed(0)
        seq = lib.nn.Sequential(*[lib.nn.Linear(3, 3) for _ in range(5)]).double()
        if lib is torch:
            state = {k: v.detach().numpy().copy() for k, v in seq.state_dict().items()}
        else:
            seq.load_state_dict(state)
        x = lib.tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
        y = lib.utils.checkpoint.checkpoint_sequential(seq, 2, x, use_reentrant=False)
        (y * y).sum().backward()
        results.append([y.detach().numpy(), x.grad.numpy()]
                       + [p.grad.numpy() for p in seq.parameters()])
    for g, w in zip(results[1], results[0]):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
