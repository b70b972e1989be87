"""Conv1d/2d/3d with padding_mode 'reflect', 'replicate' and 'circular' (CycleGAN/pix2pix
generators, some VAE and UNet encoders), against torch on the same weights: outputs and the
gradients of the input, weight and bias, with int, tuple and 'same' padding (an even kernel
pads one more on the right), eagerly and (two cases) compiled; the repr and the error for a bad mode."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")


def _pair(n, **kw):
    torch.manual_seed(0)
    cls = f"Conv{n}d"
    tmod = getattr(torch.nn, cls)(2, 3, **kw).double()
    mod = getattr(tj.nn, cls)(2, 3, **kw).double()
    mod.load_state_dict({k: v.detach().numpy() for k, v in tmod.state_dict().items()})
    return tmod, mod


def _run(lib, mod, x, compiled=False):
    x = (torch.tensor if lib is torch else tj.tensor)(x, requires_grad=True)
    out = (tj.compile(mod) if compiled else mod)(x)
    (out * out).sum().backward()
    return [out.detach().numpy(), x.grad.numpy(), mod.weight.grad.numpy(),
            mod.bias.grad.numpy()]


CASES = [(1, "reflect", dict(kernel_size=3, padding=2)),
         (2, "replicate", dict(kernel_size=(3, 2), padding=(1, 2), stride=2)),
         (2, "circular", dict(kernel_size=4, padding="same", dilation=1)),
         (2, "reflect", dict(kernel_size=3, padding="same", dilation=2)),
         (3, "circular", dict(kernel_size=3, padding=1)),
         (2, "reflect", dict(kernel_size=3, padding="valid"))]


@pytest.mark.parametrize("n,mode,kw", CASES, ids=[f"{c[0]}d-{c[1]}-{i}" for i, c in
                                                  enumerate(CASES)])
def test_conv_padding_mode_as_torch(n, mode, kw):
    tmod, mod = _pair(n, padding_mode=mode, **kw)
    x = np.random.default_rng(n).standard_normal((2, 2) + (7, 6, 5)[:n])
    want = _run(torch, tmod, x)
    runs = [_run(tj, mod, x)]
    if mode == "circular":                      # (compiled in two cases, to keep this cheap)
        runs.append(_run(tj, _pair(n, padding_mode=mode, **kw)[1], x, compiled=True))
    for got in runs:
        for g, w, what in zip(got, want, ("out", "grad x", "grad weight", "grad bias")):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=what)
    assert repr(mod) == repr(tmod)


def test_conv_bad_padding_mode_is_torchs_value_error():
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        tj.nn.Conv2d(2, 3, 3, padding_mode="mirror")
    with pytest.raises(ValueError):
        torch.nn.Conv2d(2, 3, 3, padding_mode="mirror")
