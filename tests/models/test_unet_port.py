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

Checked against torch: the loss, the gradients of every parameter and of x_0, eagerly and with
`tj.compile(model)`; and three eager AdamW steps."""
import math

import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

IMG, IN_CH, BATCH, T_STEPS = 8, 3, 2, 50
TOL = {"float32": dict(rtol=2e-4, atol=2e-6), "float64": dict(rtol=1e-9, atol=1e-12)}


def make_unet(lib, ch=8, ch_mult=(1, 2), attn_levels=(1,), dropout=0.0, upsample="interp",
              attention="bmm", temb_dtype="float32"):
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

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.ch = ch
            tdim = ch * 4
            self.time_mlp = nn.Sequential(nn.Linear(ch, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
            self.conv_in = nn.Conv2d(IN_CH, ch, 3, padding=1)
            self.downs = nn.ModuleList()
            chans, cur = [ch], ch
            for level, mult in enumerate(ch_mult):
                out = ch * mult
                blocks = nn.ModuleList([ResBlock(cur, out, tdim)])
                if level in attn_levels:
                    blocks.append(AttnBlock(out))
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
                    blocks.append(AttnBlock(out))
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


def make_diffusion(lib, model):
    """DDPM's forward process and loss around `model`; the schedule lives in buffers."""
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
            alphas_cumprod = lib.cumprod(1.0 - betas, dim=0)
            self.register_buffer("sqrt_alphas_cumprod", alphas_cumprod.sqrt())
            self.register_buffer("sqrt_one_minus_alphas_cumprod", (1.0 - alphas_cumprod).sqrt())

        def q_sample(self, x0, t, noise):
            return (extract(self.sqrt_alphas_cumprod, t, x0.shape) * x0
                    + extract(self.sqrt_one_minus_alphas_cumprod, t, x0.shape) * noise)

        def forward(self, x0, t, noise):
            x_t = self.q_sample(x0, t, noise).to(x0.dtype)
            return F.mse_loss(self.model(x_t, t), noise)

    return GaussianDiffusion()


def _state(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _pair(dtype, **kw):
    kw.setdefault("temb_dtype", dtype)
    torch.manual_seed(0)
    tmodel = make_diffusion(torch, make_unet(torch, **kw)).to(getattr(torch, dtype))
    model = make_diffusion(tj, make_unet(tj, **kw)).to(getattr(tj, dtype))
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
    (True, "float64", dict(upsample="interp", attention="sdpa"))],
    ids=["eager-f64-convT-bmm", "eager-f32-interp-sdpa", "compiled-f64-interp-sdpa"])
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
