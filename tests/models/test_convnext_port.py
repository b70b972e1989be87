"""A small ConvNeXt as facebookresearch/ConvNeXt and timm write it, written once against `lib`
(tracejit or torch) and run on both from one state_dict: a stride-4 "patchify" stem; Blocks of a
depthwise 7x7 Conv2d (groups=dim, padding=3), a channels-last LayerNorm between
`permute(0, 2, 3, 1)` and `permute(0, 3, 1, 2)`, a Linear 4x expansion with GELU, layer scale
(`nn.Parameter(init * torch.ones(dim))`) and DropPath (stochastic depth, timm's
`x.new_empty(shape).bernoulli_(keep_prob)`); downsampling layers whose channels-first LayerNorm
is written by hand (mean, pow, sqrt over dim 1 with keepdim, weight[:, None, None]); drop-path
rates from `torch.linspace(...).item()`; `self.apply(_init_weights)` with trunc_normal_;
global average pooling `x.mean([-2, -1])`, a LayerNorm and a Linear head.

A second version is ConvNeXt V2's block (GRN: torch.norm(p=2, dim=(1, 2), keepdim=True)) with
timm's pieces (LayerNorm2d subclassing nn.LayerNorm, the floor_ drop_path, a keepdim-mean head),
run channels-last (`model.to(memory_format=torch.channels_last)`, `x.contiguous(memory_format=
...)`).

Checked against torch: the loss, the gradients of every parameter and of the input, eagerly and
with `tj.compile(model)`; three AdamW steps eagerly; and the stochastic depth path in training
mode (eager and compiled) draws from tracejit's seeded stream."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

IMG, IN_CH, CLASSES, BATCH = 16, 3, 5, 2
TOL = {"float32": dict(rtol=2e-4, atol=2e-6), "float64": dict(rtol=1e-9, atol=1e-12)}


def make_convnext(lib, dims=(8, 16), depths=(2, 1), drop_path_rate=0.0,
                  layer_scale_init_value=0.5, head_init_scale=1.0, version="v1"):
    """version "v1": facebookresearch's ConvNeXt; "v2": ConvNeXt V2's block (GRN instead of
    layer scale) with timm's pieces (LayerNorm2d subclassing nn.LayerNorm, timm's older
    drop_path with floor_, a keepdim mean + LayerNorm2d + flatten head)."""
    nn = lib.nn
    F = lib.nn.functional

    def drop_path(x, drop_prob: float = 0.0, training: bool = False):
        if drop_prob == 0.0 or not training:
            return x
        keep_prob = 1 - drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)       # one draw per sample
        random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
        if keep_prob > 0.0:
            random_tensor.div_(keep_prob)
        return x * random_tensor

    def drop_path_floor(x, drop_prob: float = 0.0, training: bool = False):
        if drop_prob == 0.0 or not training:
            return x
        keep_prob = 1 - drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        random_tensor = keep_prob + lib.rand(shape, dtype=x.dtype, device=x.device)
        random_tensor.floor_()                          # binarize
        return x.div(keep_prob) * random_tensor

    class DropPath(nn.Module):
        def __init__(self, drop_prob=None):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            if version == "v2":
                return drop_path_floor(x, self.drop_prob, self.training)
            return drop_path(x, self.drop_prob, self.training)

    class LayerNorm2d(nn.LayerNorm):
        """timm's: a LayerNorm over the channels of an NCHW tensor."""

        def forward(self, x):
            x = x.permute(0, 2, 3, 1)
            x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
            return x.permute(0, 3, 1, 2)

    class GRN(nn.Module):
        """ConvNeXt V2's global response normalization, channels last."""

        def __init__(self, dim):
            super().__init__()
            self.gamma = nn.Parameter(lib.zeros(1, 1, 1, dim))
            self.beta = nn.Parameter(lib.zeros(1, 1, 1, dim))

        def forward(self, x):
            Gx = lib.norm(x, p=2, dim=(1, 2), keepdim=True)
            Nx = Gx / (Gx.mean(dim=-1, keepdim=True) + 1e-6)
            return self.gamma * (x * Nx) + self.beta + x

    class LayerNorm(nn.Module):
        """channels_last: F.layer_norm over the last dim; channels_first: by hand over dim 1."""

        def __init__(self, normalized_shape, eps=1e-6, data_format="channels_last"):
            super().__init__()
            self.weight = nn.Parameter(lib.ones(normalized_shape))
            self.bias = nn.Parameter(lib.zeros(normalized_shape))
            self.eps = eps
            self.data_format = data_format
            if self.data_format not in ["channels_last", "channels_first"]:
                raise NotImplementedError
            self.normalized_shape = (normalized_shape, )

        def forward(self, x):
            if self.data_format == "channels_last":
                return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
            u = x.mean(1, keepdim=True)
            s = (x - u).pow(2).mean(1, keepdim=True)
            x = (x - u) / lib.sqrt(s + self.eps)
            return self.weight[:, None, None] * x + self.bias[:, None, None]

    class Block(nn.Module):
        def __init__(self, dim, drop_path=0.0):
            super().__init__()
            self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
            self.norm = LayerNorm(dim, eps=1e-6)
            self.pwconv1 = nn.Linear(dim, 4 * dim)       # a 1x1 conv, as a Linear
            self.act = nn.GELU()
            if version == "v2":
                self.grn = GRN(4 * dim)
            self.pwconv2 = nn.Linear(4 * dim, dim)
            self.gamma = nn.Parameter(layer_scale_init_value * lib.ones((dim)),
                                      requires_grad=True) \
                if layer_scale_init_value > 0 and version == "v1" else None
            self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

        def forward(self, x):
            input = x
            x = self.dwconv(x)
            x = x.permute(0, 2, 3, 1)                   # (N, C, H, W) -> (N, H, W, C)
            x = self.norm(x)
            x = self.pwconv1(x)
            x = self.act(x)
            if version == "v2":
                x = self.grn(x)
            x = self.pwconv2(x)
            if self.gamma is not None:
                x = self.gamma * x
            x = x.permute(0, 3, 1, 2)                   # (N, H, W, C) -> (N, C, H, W)
            return input + self.drop_path(x)

    class ConvNeXt(nn.Module):
        def __init__(self):
            super().__init__()
            self.downsample_layers = nn.ModuleList()

            def norm2d(d):
                if version == "v2":
                    return LayerNorm2d(d, eps=1e-6)
                return LayerNorm(d, eps=1e-6, data_format="channels_first")
            stem = nn.Sequential(nn.Conv2d(IN_CH, dims[0], kernel_size=4, stride=4),
                                 norm2d(dims[0]))
            self.downsample_layers.append(stem)
            for i in range(len(dims) - 1):
                self.downsample_layers.append(nn.Sequential(
                    norm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)))
            self.stages = nn.ModuleList()
            dp_rates = [x.item() for x in lib.linspace(0, drop_path_rate, sum(depths))]
            cur = 0
            for i in range(len(dims)):
                self.stages.append(nn.Sequential(
                    *[Block(dim=dims[i], drop_path=dp_rates[cur + j]) for j in range(depths[i])]))
                cur += depths[i]
            self.norm = (LayerNorm2d if version == "v2" else nn.LayerNorm)(dims[-1], eps=1e-6)
            self.head = nn.Linear(dims[-1], CLASSES)
            self.apply(self._init_weights)
            self.head.weight.data.mul_(head_init_scale)
            self.head.bias.data.mul_(head_init_scale)

        def _init_weights(self, m):
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.2)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, GRN):        # (zeros in V2; nonzero so GRN's gradient shows)
                nn.init.normal_(m.gamma, std=0.5)

        def forward_features(self, x):
            for i in range(len(self.stages)):
                x = self.downsample_layers[i](x)
                x = self.stages[i](x)
            if version == "v2":                          # timm's head: pool, norm, flatten
                return self.norm(x.mean((2, 3), keepdim=True)).flatten(1)
            return self.norm(x.mean([-2, -1]))          # global average pooling, (N, C)

        def forward(self, x):
            return self.head(self.forward_features(x))

    return ConvNeXt()


def _state(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _pair(dtype, **kw):
    torch.manual_seed(0)
    tmodel = make_convnext(torch, **kw).to(getattr(torch, dtype))
    model = make_convnext(tj, **kw).to(getattr(tj, dtype))
    assert list(_state(model)) == list(_state(tmodel))
    model.load_state_dict(_state(tmodel))
    return tmodel, model


def _data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((BATCH, IN_CH, IMG, IMG)).astype(dtype),
            rng.integers(0, CLASSES, BATCH))


def _loss_and_grads(lib, model, compiled, x, y, channels_last=False):
    tensor = torch.tensor if lib is torch else tj.tensor
    if channels_last:               # (the usual speed recipe; values are the same)
        model = model.to(memory_format=lib.channels_last)
    forward = tj.compile(model) if compiled else model
    x = tensor(x, requires_grad=True)
    inp = x.contiguous(memory_format=lib.channels_last) if channels_last else x
    logits = forward(inp)
    loss = lib.nn.functional.cross_entropy(logits, tensor(y))
    loss.backward()
    grads = {k: p.grad.numpy().copy() for k, p in model.named_parameters()}
    return logits.detach().numpy(), loss.item(), grads, x.grad.numpy().copy()


@pytest.mark.parametrize("compiled,dtype,version", [
    (False, "float64", "v1"), (False, "float32", "v1"), (False, "float64", "v2"),
    (True, "float64", "v2")])
def test_convnext_forward_and_gradients_as_torch(compiled, dtype, version):
    tmodel, model = _pair(dtype, version=version)
    x, y = _data(dtype)
    want = _loss_and_grads(torch, tmodel, False, x, y, channels_last=version == "v2")
    got = _loss_and_grads(tj, model, compiled, x, y, channels_last=version == "v2")
    tol = TOL[dtype]
    np.testing.assert_allclose(got[0], want[0], err_msg="logits", **tol)
    np.testing.assert_allclose(got[1], want[1], **tol)
    assert list(got[2]) == list(want[2])
    for name, w in want[2].items():
        assert got[2][name].dtype == w.dtype, name
        np.testing.assert_allclose(got[2][name], w, err_msg=f"grad {name}", **tol)
    np.testing.assert_allclose(got[3], want[3], err_msg="grad input", **tol)


def _train(lib, model, batches):
    tensor = torch.tensor if lib is torch else tj.tensor
    optimizer = lib.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.05)
    model.train()
    losses = []
    for x, y in batches:
        optimizer.zero_grad()
        loss = lib.nn.functional.cross_entropy(model(tensor(x)), tensor(y),
                                               label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, _state(model)


def test_convnext_trains_with_adamw_as_torch():
    tmodel, model = _pair("float64")
    batches = [_data("float64", seed) for seed in range(3)]
    want = _train(torch, tmodel, batches)
    got = _train(tj, model, batches)
    np.testing.assert_allclose(got[0], want[0], **TOL["float64"])
    assert list(got[1]) == list(want[1])
    for name, w in want[1].items():
        np.testing.assert_allclose(got[1][name], w, err_msg=name, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("version", ["v2"])     # (v1's bernoulli_ drop_path: test_vit_port.py)
def test_convnext_stochastic_depth_trains_eagerly_and_compiled_from_one_seed(version):
    """With drop_path_rate > 0 in training mode (torch draws from another generator, so no
    torch comparison), the same tj.manual_seed gives the same outputs eagerly and compiled, and
    a second call draws new masks; eval mode is deterministic and equals drop_path_rate=0."""
    _, model = _pair("float64", drop_path_rate=0.5, version=version)
    x = tj.tensor(_data("float64")[0])
    model.train()
    outs = []
    for forward in (model, tj.compile(model)):
        tj.manual_seed(7)
        outs.append([forward(x).detach().numpy() for _ in range(4)])
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-9, atol=1e-12)
    assert not all(np.allclose(o, outs[0][0]) for o in outs[0][1:])
    model.eval()
    _, plain = _pair("float64", drop_path_rate=0.0, version=version)
    plain.eval()
    with tj.no_grad():
        np.testing.assert_allclose(model(x).numpy(), plain(x).numpy(), rtol=1e-12)
