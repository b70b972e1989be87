"""A Vision Transformer as lucidrains' vit-pytorch and timm write it, written once against `lib`
(tracejit or torch) and run on both from one state_dict: the patch embedding either as timm's
Conv2d(kernel=stride=patch) + flatten(2).transpose(1, 2) or as vit-pytorch's einops rearrange
spelled with reshape/permute + LayerNorm/Linear/LayerNorm; a cls token and a positional
embedding as nn.Parameter (timm's trunc_normal_/normal_ init, `self.apply(_init_weights)`),
pre-norm blocks whose attention is hand written (chunk, matmul * scale, nn.Softmax), timm's
F.scaled_dot_product_attention over a permuted qkv, or nn.MultiheadAttention(batch_first=True);
an MLP with GELU and Dropout; cls or mean pooling; a LayerNorm + Linear head. Training is timm's
recipe: AdamW with decay / no-decay groups, a warmup + cosine LambdaLR, clip_grad_norm_, and
F.cross_entropy(label_smoothing=0.1). Four steps agree with torch (losses, gradients,
parameters, learning rates, eval logits) eagerly, with `tj.compile(model)` and with the whole
step compiled."""
import copy
import math

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

STEPS = 4
IMG, PATCH, CHANS, CLASSES = 8, 4, 3, 5
TOL = {"float32": dict(rtol=2e-4, atol=2e-6), "float64": dict(rtol=1e-9, atol=1e-12)}


def make_vit(lib, patch="conv", attn="hand", pool="cls", dim=16, depth=2, heads=2,
             mlp_dim=32, dropout=0.0):
    nn = lib.nn
    F = lib.nn.functional

    class PatchEmbedConv(nn.Module):            # timm.layers.PatchEmbed
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(CHANS, dim, kernel_size=PATCH, stride=PATCH)
            self.norm = nn.Identity()

        def forward(self, x):
            x = self.proj(x)
            return self.norm(x.flatten(2).transpose(1, 2))      # B C H W -> B N C

    class PatchEmbedLinear(nn.Module):          # vit-pytorch's to_patch_embedding
        def __init__(self):
            super().__init__()
            patch_dim = CHANS * PATCH * PATCH
            self.net = nn.Sequential(nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim),
                                     nn.LayerNorm(dim))

        def forward(self, img):
            # Rearrange('b c (h p1) (w p2) -> b (h w) (p1 p2 c)')
            b, c, hh, ww = img.shape
            h, w = hh // PATCH, ww // PATCH
            x = img.reshape(b, c, h, PATCH, w, PATCH).permute(0, 2, 4, 3, 5, 1)
            return self.net(x.reshape(b, h * w, PATCH * PATCH * c))

    class FeedForward(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mlp_dim), nn.GELU(),
                                     nn.Dropout(dropout), nn.Linear(mlp_dim, dim),
                                     nn.Dropout(dropout))

        def forward(self, x):
            return self.net(x)

    class Attention(nn.Module):                 # vit-pytorch's, einops spelled out
        def __init__(self, dim_head=8):
            super().__init__()
            inner_dim = dim_head * heads
            self.heads = heads
            self.scale = dim_head ** -0.5
            self.norm = nn.LayerNorm(dim)
            self.attend = nn.Softmax(dim=-1)
            self.dropout = nn.Dropout(dropout)
            self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
            self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), nn.Dropout(dropout))

        def forward(self, x):
            x = self.norm(x)
            b, n, _ = x.shape
            qkv = self.to_qkv(x).chunk(3, dim=-1)
            q, k, v = map(lambda t: t.reshape(b, n, self.heads, -1).transpose(1, 2), qkv)
            dots = lib.matmul(q, k.transpose(-1, -2)) * self.scale
            attn = self.dropout(self.attend(dots))
            out = lib.matmul(attn, v)
            return self.to_out(out.transpose(1, 2).reshape(b, n, -1))

    class SdpaAttention(nn.Module):             # timm.models.vision_transformer.Attention
        def __init__(self):
            super().__init__()
            self.num_heads = heads
            self.head_dim = dim // heads
            self.norm = nn.LayerNorm(dim)
            self.qkv = nn.Linear(dim, dim * 3, bias=True)
            self.attn_drop = nn.Dropout(dropout)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(dropout)

        def forward(self, x):
            x = self.norm(x)
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3,
                                                                                     1, 4)
            q, k, v = qkv.unbind(0)
            x = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
            x = x.transpose(1, 2).reshape(B, N, C)
            return self.proj_drop(self.proj(x))

    class MhaAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(dim)
            self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

        def forward(self, x):
            x = self.norm(x)
            return self.attn(x, x, x, need_weights=False)[0]

    def drop_path(x, drop_prob: float = 0.0, training: bool = False):    # timm.layers.drop
        if drop_prob == 0.0 or not training:
            return x
        keep_prob = 1 - drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
        if keep_prob > 0.0:
            random_tensor.div_(keep_prob)
        return x * random_tensor

    class DropPath(nn.Module):
        def __init__(self, drop_prob):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            return drop_path(x, self.drop_prob, self.training)

    class LayerScale(nn.Module):
        def __init__(self, init_values=0.5, inplace=True):
            super().__init__()
            self.inplace = inplace
            self.gamma = nn.Parameter(init_values * lib.ones(dim))

        def forward(self, x):
            return x.mul_(self.gamma) if self.inplace else x * self.gamma

    class TimmAttention(nn.Module):             # timm's, with its TorchScript annotations
        fused_attn: lib.jit.Final[bool]

        def __init__(self, fused_attn):
            super().__init__()
            self.num_heads = heads
            self.head_dim = dim // heads
            self.scale = self.head_dim ** -0.5
            self.fused_attn = fused_attn
            self.qkv = nn.Linear(dim, dim * 3, bias=True)
            self.q_norm, self.k_norm = nn.Identity(), nn.Identity()
            self.attn_drop = nn.Dropout(dropout)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(dropout)

        def forward(self, x):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3,
                                                                                     1, 4)
            q, k, v = qkv.unbind(0)
            q, k = self.q_norm(q), self.k_norm(k)
            if self.fused_attn:
                x = F.scaled_dot_product_attention(
                    q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
            else:
                q = q * self.scale
                attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
                x = self.attn_drop(attn) @ v
            return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))

    class TimmBlock(nn.Module):
        def __init__(self, i):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = TimmAttention(fused_attn=i % 2 == 0)
            self.ls1 = LayerScale()
            self.drop_path1 = DropPath(dropout) if dropout > 0.0 else nn.Identity()
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(approximate="tanh"),
                                     nn.Dropout(dropout), nn.Linear(mlp_dim, dim))
            self.ls2 = LayerScale()
            self.drop_path2 = DropPath(dropout) if dropout > 0.0 else nn.Identity()

        def forward(self, x):
            x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
            return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(dim)
            if attn == "timm":
                self.layers = nn.Sequential(*[TimmBlock(i) for i in range(depth)])
                return
            attention = {"hand": Attention, "sdpa": SdpaAttention, "mha": MhaAttention}[attn]
            self.layers = nn.ModuleList([nn.ModuleList([attention(), FeedForward()])
                                         for _ in range(depth)])

        def forward(self, x):
            if attn == "timm":
                if not lib.jit.is_scripting():
                    x = self.layers(x)
                return self.norm(x)
            for attn_, ff in self.layers:
                x = attn_(x) + x
                x = ff(x) + x
            return self.norm(x)

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            num_patches = (IMG // PATCH) ** 2
            self.to_patch_embedding = PatchEmbedConv() if patch == "conv" else PatchEmbedLinear()
            self.cls_token = nn.Parameter(lib.zeros(1, 1, dim))
            self.pos_embedding = nn.Parameter(lib.zeros(1, num_patches + 1, dim))
            self.dropout = nn.Dropout(dropout)
            self.transformer = Transformer()
            self.pool = pool
            self.to_latent = nn.Identity()
            self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, CLASSES))
            nn.init.trunc_normal_(self.pos_embedding, std=0.02)
            nn.init.normal_(self.cls_token, std=1e-6)
            self.apply(self._init_weights)

        @lib.jit.ignore
        def no_weight_decay(self):
            return {"pos_embedding", "cls_token"}

        def _init_weights(self, m):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

        def forward(self, img):
            x = self.to_patch_embedding(img)
            b, n, _ = x.shape
            cls_tokens = self.cls_token.expand(b, -1, -1)
            x = lib.cat((cls_tokens, x), dim=1)
            x += self.pos_embedding[:, :(n + 1)]
            x = self.dropout(x)
            x = self.transformer(x)
            x = x.mean(dim=1) if self.pool == "mean" else x[:, 0]
            return self.mlp_head(self.to_latent(x))

    return ViT()


def param_groups(model, weight_decay=0.05):
    """timm's param_groups_weight_decay: no decay for biases, norms and 1-d tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or name in model.no_weight_decay():
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": no_decay, "weight_decay": 0.0},
            {"params": decay, "weight_decay": weight_decay}]


def warmup_cosine(warmup=2, total=STEPS):
    def lr_lambda(step):
        if step < warmup:
            return float(step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr_lambda


def _state(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _run(lib, model, mode, xs, ys, dtype):
    F = lib.nn.functional
    tensor = torch.tensor if lib is torch else tj.tensor
    forward = tj.compile(model) if mode == "compiled_model" else model
    optimizer = lib.optim.AdamW(param_groups(model), lr=1e-2, betas=(0.9, 0.999))
    scheduler = lib.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine())

    def step(images, target):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(images), target, label_smoothing=0.1)
        loss.backward()
        lib.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        return loss
    if mode == "compiled_step":
        step = tj.compile(step)
    model.train()
    losses, lrs = [], []
    for x, y in zip(xs, ys):
        losses.append(step(tensor(x.astype(dtype)), tensor(y)).item())
        scheduler.step()
        lrs.append(scheduler.get_last_lr())
    grads = {k: p.grad.numpy().copy() for k, p in model.named_parameters()}
    model.eval()
    with lib.no_grad():
        evaluated = forward(tensor(xs[0].astype(dtype))).numpy()
    return losses, lrs, grads, _state(model), evaluated


def _pair(dtype, **kw):
    torch.manual_seed(0)
    tmodel = make_vit(torch, **kw).to(getattr(torch, dtype))
    model = make_vit(tj, **kw).to(getattr(tj, dtype))
    assert list(_state(model)) == list(_state(tmodel))
    model.load_state_dict(_state(tmodel))
    return tmodel, model


def _data():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, CHANS, IMG, IMG)), rng.integers(0, CLASSES, 4)
    return [x] * STEPS, [y] * STEPS          # one batch, so the loss must fall


def _compare(got, want, dtype):
    tol = TOL[dtype]
    np.testing.assert_allclose(got[0], want[0], **tol)
    assert got[1] == want[1]                       # the learning rates, exactly
    for what, g, w in (("grad", got[2], want[2]), ("state", got[3], want[3])):
        assert list(g) == list(w), what
        for name in w:
            assert g[name].dtype == w[name].dtype, (what, name)
            a, b = g[name], w[name]
            if name.endswith(("in_proj_bias", "qkv.bias")):
                # the key third's gradient is exactly 0 (a key bias adds one constant to a
                # softmax row): both libraries see only rounding noise, which AdamW scales up
                # (to ~lr * 1e-9 in float64, to +-lr in float32); compare the query and value
                third = b.shape[0] // 3
                a, b = (np.delete(t, np.s_[third:2 * third]) for t in (a, b))
            # (float32 parameters: Adam divides each gradient by its own scale, so an element
            # whose gradient is near 0 moves by rounding noise of up to a few lr * 1e-3: one
            # weight of 512 sat 1.8e-5 from torch's once layer_norm's mean was refined so that
            # constant rows center to exact zeros)
            atol = 3e-5 if what == "state" and dtype == "float32" else tol["atol"]
            np.testing.assert_allclose(a, b, err_msg=f"{what} {name}", rtol=tol["rtol"],
                                       atol=atol)
    np.testing.assert_allclose(got[4], want[4], **tol)


CONFIGS = [dict(patch="conv", attn="hand", pool="cls"),
           dict(patch="linear", attn="sdpa", pool="mean"),
           dict(patch="conv", attn="mha", pool="mean"),
           dict(patch="conv", attn="timm", pool="cls")]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(c.values()))
@pytest.mark.parametrize("mode,dtype", [
    ("eager", "float64"), ("compiled_model", "float64"), ("compiled_step", "float64"),
    ("compiled_step", "float32")])
def test_vit_trains_with_adamw_warmup_cosine_as_torch(cfg, mode, dtype):
    tmodel, model = _pair(dtype, **cfg)
    xs, ys = _data()
    want = _run(torch, tmodel, "eager", xs, ys, dtype)
    got = _run(tj, model, mode, xs, ys, dtype)
    assert want[0][-1] < want[0][0]
    _compare(got, want, dtype)


@pytest.mark.slow           # three trainings and two compilations per case (~35 s here)
@pytest.mark.parametrize("cfg", [CONFIGS[1], CONFIGS[3]], ids=lambda c: "-".join(c.values()))
def test_vit_with_dropout_draws_one_seeded_stream_eagerly_and_compiled(cfg):
    """With dropout on (torch's masks come from another generator, so no torch comparison),
    the same tj.manual_seed gives the same training eagerly, with tj.compile(model) and with
    the compiled step: each compiled call draws fresh masks from the one stream rather than
    baking the first call's. Without the seed (or without dropout) the run differs."""
    xs, ys = _data()
    runs = []
    for mode in ("eager", "compiled_model", "compiled_step"):
        _, model = _pair("float64", dropout=0.2, **cfg)
        tj.manual_seed(123)
        runs.append(_run(tj, model, mode, xs, ys, "float64"))
    for got in runs[1:]:
        np.testing.assert_allclose(got[0], runs[0][0], rtol=1e-12)
        for name, want in runs[0][3].items():
            np.testing.assert_allclose(got[3][name], want, rtol=1e-9, atol=1e-12, err_msg=name)
    _, model = _pair("float64", dropout=0.0, **cfg)
    assert not np.allclose(_run(tj, model, "eager", xs, ys, "float64")[0], runs[0][0])
    # a compiled forward in train mode draws new masks each call; eval mode draws none
    _, model = _pair("float64", dropout=0.2, **cfg)
    forward, x = tj.compile(model), tj.tensor(xs[0])
    first, second = forward(x).detach().numpy(), forward(x).detach().numpy()
    assert not np.allclose(first, second)
    model.eval()
    with tj.no_grad():
        np.testing.assert_array_equal(forward(x).numpy(), forward(x).numpy())


def _run_mixup_ema(lib, model, mode, xs, ys, lams):
    """timm's train loop extras: Mixup blending the batch in place (x.flip(0).mul_(1 - lam),
    x.mul_(lam).add_(...)) with smoothed one-hot targets built by scatter_, SoftTargetCrossEntropy,
    and ModelEmaV2 (a deepcopy updated through state_dict().values() copy_ under no_grad)."""
    F = lib.nn.functional
    tensor = torch.tensor if lib is torch else tj.tensor
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    forward = tj.compile(model) if mode == "compiled_model" else model
    optimizer = lib.optim.AdamW(model.parameters(), lr=1e-2)

    def step(x, y, lam):
        x_flipped = x.flip(0).mul_(1.0 - lam)
        x = x.mul_(lam).add_(x_flipped)
        off, on = 0.1 / CLASSES, 1.0 - 0.1 + 0.1 / CLASSES
        y1 = lib.full((y.size(0), CLASSES), off, dtype=x.dtype).scatter_(1, y.view(-1, 1), on)
        target = y1 * lam + y1.flip(0) * (1.0 - lam)
        loss = lib.sum(-target * F.log_softmax(forward(x), dim=-1), dim=-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with lib.no_grad():
            for ema_v, model_v in zip(ema.state_dict().values(), model.state_dict().values()):
                ema_v.copy_(ema_v * 0.9 + (1.0 - 0.9) * model_v)
        return loss
    if mode == "compiled_step":
        step = tj.compile(step)
    model.train()
    losses = [step(tensor(x.copy()), tensor(y), lam).item() for x, y, lam in zip(xs, ys, lams)]
    return losses, _state(model), _state(ema)


@pytest.mark.parametrize("mode", ["eager", "compiled_model", "compiled_step"])
def test_vit_mixup_soft_targets_and_ema_as_torch(mode):
    tmodel, model = _pair("float64", patch="conv", attn="hand", pool="cls")
    xs, ys = _data()
    lams = [0.7, 0.6, 0.8, 0.55]                # a new lam each call: no retrace, no stale one
    want = _run_mixup_ema(torch, tmodel, "eager", xs, ys, lams)
    got = _run_mixup_ema(tj, model, mode, xs, ys, lams)
    tol = TOL["float64"]
    np.testing.assert_allclose(got[0], want[0], **tol)
    for g, w in zip(got[1:], want[1:]):
        assert list(g) == list(w)
        for name in w:
            np.testing.assert_allclose(g[name], w[name], err_msg=name, **tol)
    assert not np.allclose(want[2]["mlp_head.1.weight"], want[1]["mlp_head.1.weight"])
