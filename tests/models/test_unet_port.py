"""A small DDPM-style UNet as diffusion code writes it (ho's DDPM, labml's and lucidrains' ports),
written once against `lib` (tracejit or torch) and run on both from one state_dict: a sinusoidal
timestep embedding (exp of an arange, sin/cos concatenated) through a Linear-SiLU-Linear MLP;
ResBlocks of GroupNorm, SiLU, Conv2d with the time embedding projected and added through
`[:, :, None, None]`, Dropout, a 1x1-conv shortcut; a self-attention block over the spatial
positions (1x1-conv qkv, chunk, reshape/permute, bmm, softmax; or F.scaled_dot_product_attention);
strided-conv downsampling; upsampling by F.interpolate(scale_factor=2, mode="nearest") + conv or
by ConvTranspose2d; skip connections kept in a list and joined with `torch.cat(dim=1)`;
nn.ModuleList built in loops. The loss is DDPM's: a noise schedule in buffers (linspace, cumprod),
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps with abar_t gathered at the batch's timesteps and
eps passed in (so both libraries see the same noise), and F.mse_loss(model(x_t, t), eps).

A second style is lucidrains' denoising-diffusion-pytorch: weight-standardized convs (an
nn.Conv2d subclass calling F.conv2d with torch.var_mean'd weights), FiLM scale/shift from the time
embedding via chunk, linear attention with einsum and an RMSNorm by F.normalize, PixelUnshuffle
down and nn.Upsample up, with the min-SNR-weighted per-sample loss (reduction="none").

Checked against torch: the loss, the gradients of every parameter and of x_0, eagerly and with
`tj.compile(model)`; three eager AdamW steps; and three DDPM sampling steps under no_grad."""
import math

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

IMG, IN_CH, BATCH, T_STEPS = 8, 3, 2, 50
TOL = {"float32": dict(rtol=2e-4, atol=2e-6), "float64": dict(rtol=1e-9, atol=1e-12)}


def make_unet(lib, ch=8, ch_mult=(1, 2), attn_levels=(1,), dropout=0.0, upsample="interp",
              attention="bmm", temb_dtype="float32", style="ddpm"):
    """style "ddpm": ho's blocks; "lucid": lucidrains' denoising-diffusion-pytorch blocks
    (weight-standardized convs, FiLM scale/shift from the time embedding, linear attention
    with einsum and an RMSNorm by F.normalize, PixelUnshuffle down, nn.Upsample up)."""
    nn = lib.nn
    F = lib.nn.functional

    def timestep_embedding(t, dim):
        half = dim // 2
        # float32 as DDPM writes it; float64 for the float64 comparisons (NumPy's float32 exp,
        # which tracejit runs eagerly, may round 1 ulp away from torch's)
        dtype = getattr(lib, temb_dtype)
        freqs = lib.exp(-math.log(10000) * lib.arange(half, dtype=dtype) / half)
        args = t[:, None].to(dtype) * freqs[None]
        return lib.cat([lib.sin(args), lib.cos(args)], dim=-1)

    class ResBlock(nn.Module):
        def __init__(self, in_ch, out_ch, tdim):
            super().__init__()
            self.norm1 = nn.GroupNorm(4, in_ch)
            self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
            self.temb_proj = nn.Linear(tdim, out_ch)
            self.norm2 = nn.GroupNorm(4, out_ch)
            self.dropout = nn.Dropout(dropout)
            self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

        def forward(self, x, temb):
            h = self.conv1(F.silu(self.norm1(x)))
            h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
            h = self.conv2(self.dropout(F.silu(self.norm2(h))))
            return h + self.shortcut(x)

    class AttnBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.norm = nn.GroupNorm(4, c)
            self.qkv = nn.Conv2d(c, 3 * c, 1)
            self.proj_out = nn.Conv2d(c, c, 1)

        def forward(self, x):
            B, C, H, W = x.shape
            q, k, v = self.qkv(self.norm(x)).chunk(3, dim=1)
            if attention == "sdpa":
                q, k, v = (z.reshape(B, 1, C, H * W).transpose(-1, -2) for z in (q, k, v))
                h = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2)
            else:
                q = q.reshape(B, C, H * W).permute(0, 2, 1)        # B, HW, C
                k = k.reshape(B, C, H * W)                         # B, C, HW
                w = lib.bmm(q, k) * (int(C) ** (-0.5))
                w = F.softmax(w, dim=-1)
                v = v.reshape(B, C, H * W).permute(0, 2, 1)
                h = lib.bmm(w, v).permute(0, 2, 1)                 # B, C, HW
            return x + self.proj_out(h.reshape(B, C, H, W))

    class Downsample(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

        def forward(self, x):
            return self.conv(x)

    class Upsample(nn.Module):
        def __init__(self, c):
            super().__init__()
            if upsample == "convT":
                self.conv = nn.ConvTranspose2d(c, c, 4, stride=2, padding=1)
            else:
                self.conv = nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            if upsample == "convT":
                return self.conv(x)
            return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))

    class WeightStandardizedConv2d(nn.Conv2d):
        def forward(self, x):
            eps = 1e-5 if x.dtype == lib.float32 else 1e-3
            var, mean = lib.var_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
            weight = (self.weight - mean) * (var + eps).rsqrt()
            return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation,
                            self.groups)

    class LucidBlock(nn.Module):
        def __init__(self, dim, dim_out, groups=4):
            super().__init__()
            self.proj = WeightStandardizedConv2d(dim, dim_out, 3, padding=1)
            self.norm = nn.GroupNorm(groups, dim_out)
            self.act = nn.SiLU()

        def forward(self, x, scale_shift=None):
            x = self.norm(self.proj(x))
            if scale_shift is not None:
                scale, shift = scale_shift
                x = x * (scale + 1) + shift
            return self.act(x)

    class LucidResBlock(nn.Module):
        def __init__(self, dim, dim_out, tdim):
            super().__init__()
            self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(tdim, dim_out * 2))
            self.block1 = LucidBlock(dim, dim_out)
            self.block2 = LucidBlock(dim_out, dim_out)
            self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

        def forward(self, x, time_emb):
            time_emb = self.mlp(time_emb)[:, :, None, None]        # 'b c -> b c 1 1'
            h = self.block1(x, scale_shift=time_emb.chunk(2, dim=1))
            h = self.block2(h)
            return h + self.res_conv(x)

    class RMSNorm(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.g = nn.Parameter(lib.ones(1, dim, 1, 1))

        def forward(self, x):
            return F.normalize(x, dim=1) * self.g * (x.shape[1] ** 0.5)

    class LinearAttention(nn.Module):
        def __init__(self, dim, heads=2, dim_head=4):
            super().__init__()
            self.scale = dim_head ** -0.5
            self.heads = heads
            hidden = dim_head * heads
            self.norm = RMSNorm(dim)
            self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
            self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), RMSNorm(dim))

        def forward(self, x):
            b, c, h, w = x.shape
            qkv = self.to_qkv(self.norm(x)).chunk(3, dim=1)
            q, k, v = map(lambda t: t.reshape(b, self.heads, -1, h * w), qkv)
            q = q.softmax(dim=-2) * self.scale
            k = k.softmax(dim=-1)
            context = lib.einsum("b h d n, b h e n -> b h d e", k, v)
            out = lib.einsum("b h d e, b h d n -> b h e n", context, q)
            return self.to_out(out.reshape(b, -1, h, w)) + x

    def lucid_down(c):          # Rearrange('b c (h p1) (w p2) -> b (c p1 p2) h w') + 1x1 conv
        return nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(c * 4, c, 1))

    def lucid_up(c):
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                             nn.Conv2d(c, c, 3, padding=1))

    if style == "lucid":
        ResBlock, LevelAttn, Downsample, Upsample = (  # noqa: F811
            LucidResBlock, LinearAttention, lucid_down, lucid_up)
    else:
        LevelAttn = AttnBlock

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.ch = ch
            tdim = ch * 4
            act = nn.GELU() if style == "lucid" else nn.SiLU()
            self.time_mlp = nn.Sequential(nn.Linear(ch, tdim), act, nn.Linear(tdim, tdim))
            self.conv_in = nn.Conv2d(IN_CH, ch, 3, padding=1)
            self.downs = nn.ModuleList()
            chans, cur = [ch], ch
            for level, mult in enumerate(ch_mult):
                out = ch * mult
                blocks = nn.ModuleList([ResBlock(cur, out, tdim)])
                if level in attn_levels:
                    blocks.append(LevelAttn(out))
                cur = out
                chans.append(cur)
                down = Downsample(cur) if level != len(ch_mult) - 1 else nn.Identity()
                self.downs.append(nn.ModuleList([blocks, down]))
            self.mid = nn.ModuleList([ResBlock(cur, cur, tdim), AttnBlock(cur),
                                      ResBlock(cur, cur, tdim)])
            self.ups = nn.ModuleList()
            for level, mult in reversed(list(enumerate(ch_mult))):
                out = ch * mult
                blocks = nn.ModuleList([ResBlock(cur + chans.pop(), out, tdim)])
                if level in attn_levels:
                    blocks.append(LevelAttn(out))
                cur = out
                up = Upsample(cur) if level != 0 else nn.Identity()
                self.ups.append(nn.ModuleList([blocks, up]))
            self.norm_out = nn.GroupNorm(4, cur)
            self.conv_out = nn.Conv2d(cur, IN_CH, 3, padding=1)

        def forward(self, x, t):
            temb = self.time_mlp(timestep_embedding(t, self.ch).to(x.dtype))
            h = self.conv_in(x)
            hs = [h]
            for blocks, down in self.downs:
                for block in blocks:
                    h = block(h, temb) if isinstance(block, ResBlock) else block(h)
                hs.append(h)
                h = down(h)
            h = self.mid[0](h, temb)
            h = self.mid[1](h)
            h = self.mid[2](h, temb)
            for blocks, up in self.ups:
                h = lib.cat([h, hs.pop()], dim=1)
                for block in blocks:
                    h = block(h, temb) if isinstance(block, ResBlock) else block(h)
                h = up(h)
            return self.conv_out(F.silu(self.norm_out(h)))

    return UNet()


def make_diffusion(lib, model, loss="mse"):
    """DDPM's forward process, loss and sampling step around `model`; the schedule lives in
    buffers. loss "mse": F.mse_loss; "weighted": lucidrains' per-sample mean of
    F.mse_loss(reduction="none") times a min-SNR weight gathered at t."""
    nn = lib.nn
    F = lib.nn.functional

    def extract(a, t, x_shape):
        b = t.shape[0]
        out = a.gather(-1, t)
        return out.reshape(b, *((1,) * (len(x_shape) - 1)))

    class GaussianDiffusion(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            betas = lib.linspace(1e-4, 0.02, T_STEPS, dtype=lib.float64)
            alphas = 1.0 - betas
            alphas_cumprod = lib.cumprod(alphas, dim=0)
            alphas_cumprod_prev = F.pad(alphas_cumprod[:-1], (1, 0), value=1.0)
            self.register_buffer("betas", betas)
            self.register_buffer("sqrt_alphas_cumprod", alphas_cumprod.sqrt())
            self.register_buffer("sqrt_one_minus_alphas_cumprod", (1.0 - alphas_cumprod).sqrt())
            self.register_buffer("sqrt_recip_alphas", lib.sqrt(1.0 / alphas))
            self.register_buffer("posterior_variance",
                                 betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod))
            snr = alphas_cumprod / (1 - alphas_cumprod)
            self.register_buffer("loss_weight", snr.clamp(max=5.0) / snr)

        def q_sample(self, x0, t, noise):
            return (extract(self.sqrt_alphas_cumprod, t, x0.shape) * x0
                    + extract(self.sqrt_one_minus_alphas_cumprod, t, x0.shape) * noise)

        def forward(self, x0, t, noise):
            x_t = self.q_sample(x0, t, noise).to(x0.dtype)
            if loss == "mse":
                return F.mse_loss(self.model(x_t, t), noise)
            per = F.mse_loss(self.model(x_t, t), noise, reduction="none")
            per = per.reshape(per.shape[0], -1).mean(dim=1)           # 'b ... -> b'
            return (per * extract(self.loss_weight, t, per.shape)).mean()

        @lib.no_grad()
        def p_sample(self, x, t_index, noise):
            """One step of DDPM's Algorithm 2 at t_index for the whole batch."""
            t = lib.full((x.shape[0],), t_index, dtype=lib.long)
            betas_t = extract(self.betas, t, x.shape)
            sqrt_one_minus_t = extract(self.sqrt_one_minus_alphas_cumprod, t, x.shape)
            model_mean = extract(self.sqrt_recip_alphas, t, x.shape) * (
                x - betas_t * self.model(x, t) / sqrt_one_minus_t)
            if t_index == 0:
                return model_mean.to(x.dtype)
            var_t = extract(self.posterior_variance, t, x.shape)
            return (model_mean + lib.sqrt(var_t) * noise).to(x.dtype)

    return GaussianDiffusion()


def _state(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _pair(dtype, loss="mse", **kw):
    kw.setdefault("temb_dtype", dtype)
    torch.manual_seed(0)
    tmodel = make_diffusion(torch, make_unet(torch, **kw), loss).to(getattr(torch, dtype))
    model = make_diffusion(tj, make_unet(tj, **kw), loss).to(getattr(tj, dtype))
    assert list(_state(model)) == list(_state(tmodel))
    model.load_state_dict(_state(tmodel))
    return tmodel, model


def _data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((BATCH, IN_CH, IMG, IMG)).astype(dtype)
    noise = rng.standard_normal((BATCH, IN_CH, IMG, IMG)).astype(dtype)
    t = rng.integers(0, T_STEPS, BATCH)
    return x0, t, noise


def _loss_and_grads(lib, model, compiled, x0, t, noise):
    tensor = torch.tensor if lib is torch else tj.tensor
    forward = tj.compile(model) if compiled else model
    x = tensor(x0, requires_grad=True)
    loss = forward(x, tensor(t), tensor(noise))
    loss.backward()
    grads = {k: p.grad.numpy().copy() for k, p in model.named_parameters()}
    return loss.item(), grads, x.grad.numpy().copy()


def _assert_grads(got, want, tol):
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_allclose(got[name], want[name], err_msg=f"grad {name}", **tol)


# (one compiled case: compiling this UNet's forward and backward costs ~8 s of CPU here)
@pytest.mark.parametrize("compiled,dtype,cfg", [
    (False, "float64", dict(upsample="convT", attention="bmm")),
    (False, "float32", dict(upsample="interp", attention="sdpa")),
    (False, "float64", dict(style="lucid", loss="weighted")),
    (True, "float64", dict(upsample="interp", attention="sdpa"))],
    ids=["eager-f64-convT-bmm", "eager-f32-interp-sdpa", "eager-f64-lucid",
         "compiled-f64-interp-sdpa"])
def test_unet_ddpm_loss_and_gradients_as_torch(compiled, dtype, cfg):
    tmodel, model = _pair(dtype, **cfg)
    x0, t, noise = _data(dtype)
    want = _loss_and_grads(torch, tmodel, False, x0, t, noise)
    got = _loss_and_grads(tj, model, compiled, x0, t, noise)
    tol = TOL[dtype]
    np.testing.assert_allclose(got[0], want[0], **tol)
    _assert_grads(got[1], want[1], tol)
    np.testing.assert_allclose(got[2], want[2], err_msg="grad x0", **tol)


def _train(lib, model, batches):
    tensor = torch.tensor if lib is torch else tj.tensor
    optimizer = lib.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)

    def step(x0, t, noise):
        optimizer.zero_grad()
        loss = model(x0, t, noise)
        loss.backward()
        optimizer.step()
        return loss
    model.train()
    losses = [step(tensor(x0), tensor(t), tensor(noise)).item() for x0, t, noise in batches]
    return losses, _state(model)


def test_unet_trains_with_adamw_as_torch():
    dtype = "float64"
    tmodel, model = _pair(dtype)
    batches = [_data(dtype, seed)[:2] + (_data(dtype, seed + 10)[2],) for seed in range(3)]
    want = _train(torch, tmodel, batches)
    got = _train(tj, model, batches)
    tol = TOL[dtype]
    np.testing.assert_allclose(got[0], want[0], **tol)
    assert list(got[1]) == list(want[1])
    for name, w in want[1].items():
        np.testing.assert_allclose(got[1][name], w, err_msg=name, rtol=1e-8, atol=1e-10)


def test_unet_with_dropout_runs_in_train_mode_and_is_deterministic_in_eval():
    _, model = _pair("float32", dropout=0.3)
    x0, t, noise = (tj.tensor(a) for a in _data("float32"))
    tj.manual_seed(0)
    a, b = model(x0, t, noise).item(), model(x0, t, noise).item()
    assert a != b                       # fresh dropout masks each call
    model.eval()
    with tj.no_grad():
        assert model(x0, t, noise).item() == model(x0, t, noise).item()


def test_unet_ddpm_sampling_steps_as_torch():
    """Three steps of DDPM's sampler under no_grad (t = 2, 1, 0), the noise of each step
    passed in, then clamp to [-1, 1]."""
    tmodel, model = _pair("float64", style="lucid")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((BATCH, IN_CH, IMG, IMG))
    noises = [rng.standard_normal(x.shape) for _ in range(3)]

    def run(lib, m):
        tensor = torch.tensor if lib is torch else tj.tensor
        m.eval()
        img = tensor(x)
        for i, noise in zip(reversed(range(3)), noises):
            img = m.p_sample(img, i, tensor(noise))
            assert not img.requires_grad
        return img.clamp(-1.0, 1.0).numpy()
    np.testing.assert_allclose(run(tj, model), run(torch, tmodel), **TOL["float64"])
