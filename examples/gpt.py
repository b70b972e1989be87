"""Train a character-level nanoGPT on examples/data/poems.txt with tracejit.

The model is nanoGPT's (Karpathy's model.py: pre-norm transformer blocks, causal
self-attention through scaled_dot_product_attention, GELU MLP, tied token embedding and output
head), written exactly as in PyTorch with `import tracejit as torch`-style names. Training uses
AdamW with decay/no-decay groups, a linear warmup then a cosine schedule, and gradient clipping.

    python examples/gpt.py                    # eager, CPU, defaults small (about a minute)
    python examples/gpt.py --compile          # the whole training step compiled as one graph
    python examples/gpt.py --device cuda --steps 2000 --n-layer 4 --n-embd 128 --block-size 64
    python -m tracejit.distributed.run --nproc 2 examples/gpt.py --ddp   # data-parallel, 2 ranks

It prints the loss as it trains, the tokens per second (after the first step, which compiles
when --compile is given), the validation loss, and a sample generated from the trained model.
Nothing is downloaded: the text ships in the repository (examples/data/README.md says what it is).
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

import tracejit as tj
import tracejit.distributed as dist
import tracejit.nn as nn
from tracejit.nn import functional as F

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "poems.txt")


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.resid_dropout = nn.Dropout(dropout)
        self.n_head, self.n_embd, self.dropout = n_head, n_embd, dropout

    def forward(self, x: tj.Tensor) -> tj.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: tj.Tensor) -> tj.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd, dropout)

    def forward(self, x: tj.Tensor) -> tj.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int,
                 n_embd: int, dropout: float) -> None:
        super().__init__()
        self.block_size = block_size
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd),
            wpe=nn.Embedding(block_size, n_embd),
            drop=nn.Dropout(dropout),
            h=nn.ModuleList([Block(n_embd, n_head, dropout) for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(n_embd),
        ))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight      # weight tying, as nanoGPT
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):                  # GPT-2's scaled residual init
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: tj.Tensor, targets: tj.Tensor | None = None):
        b, t = idx.size()
        pos = tj.arange(0, t, dtype=tj.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                               ignore_index=-1)
        return logits, loss

    def configure_optimizers(self, weight_decay: float, lr: float) -> tj.optim.AdamW:
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return tj.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))

    @tj.no_grad()
    def generate(self, idx: tj.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None) -> tj.Tensor:
        for _ in range(max_new_tokens):
            idx_cond = idx if idx.size(1) <= self.block_size else idx[:, -self.block_size:]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = tj.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("Inf")
            probs = F.softmax(logits, dim=-1)
            idx = tj.cat((idx, tj.multinomial(probs, num_samples=1)), dim=1)
        return idx


def load_text(path: str) -> tuple[np.ndarray, list[str]]:
    """The text as character ids, and the vocabulary (its sorted distinct characters)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    return np.array([stoi[c] for c in text], dtype=np.int64), chars


def get_batch(data: np.ndarray, batch_size: int, block_size: int, rng: np.random.Generator,
              device: str) -> tuple[tj.Tensor, tj.Tensor]:
    ix = rng.integers(0, len(data) - block_size - 1, batch_size)
    x = np.stack([data[i:i + block_size] for i in ix])
    y = np.stack([data[i + 1:i + 1 + block_size] for i in ix])
    return tj.tensor(x, device=device), tj.tensor(y, device=device)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--compile", action="store_true",
                   help="compile the whole step (forward, backward, clip, AdamW) as one graph")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--min-lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=20, help="steps of linear warmup")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--sample-tokens", type=int, default=200)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--ddp", action="store_true",
                   help="data-parallel over the ranks of an MPI job (DistributedDataParallel; "
                        "start it with python -m tracejit.distributed.run --nproc N)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cuda" and not tj.cuda_available():
        raise SystemExit("--device cuda needs CuPy and an NVIDIA GPU")
    rank, world = 0, 1
    if args.ddp:
        dist.init_process_group()
        rank, world = dist.get_rank(), dist.get_world_size()
        if args.device == "cuda":             # one GPU per rank of a node
            args.device = f"cuda:{dist.get_local_rank()}"
    log = print if rank == 0 else (lambda *a, **k: None)
    tj.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed + rank)     # each rank draws its own batches
    data, chars = load_text(DATA)
    split = int(0.9 * len(data))
    train_data, val_data = data[:split], data[split:]

    model = GPT(len(chars), args.block_size, args.n_layer, args.n_head, args.n_embd,
                args.dropout).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    # DDP broadcasts rank 0's parameters, then averages the gradients over the ranks
    net = nn.parallel.DistributedDataParallel(model) if args.ddp else model
    log(f"{len(data)} characters, vocabulary {len(chars)}, {n_params / 1e3:.1f}K parameters, "
          f"{'compiled step' if args.compile else 'eager'} on {args.device}"
          f"{f', data-parallel over {world} ranks' if args.ddp else ''}")

    optimizer = model.configure_optimizers(args.weight_decay, args.lr)
    # linear warmup, then cosine down to min_lr (nanoGPT's get_lr) as a LambdaLR factor; the lr
    # is a runtime input of the compiled step, so changing it never recompiles
    warmup = max(1, min(args.warmup, args.steps - 1))

    def lr_factor(it: int) -> float:
        if it < warmup:
            return (it + 1) / (warmup + 1)
        ratio = min(1.0, (it - warmup) / max(1, args.steps - warmup))
        return (args.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (args.lr - args.min_lr)) \
            / args.lr
    scheduler = tj.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    def train_step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
        _, loss = net(x, y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    step = tj.compile(train_step) if args.compile else train_step
    tokens = args.batch_size * args.block_size * world     # over all ranks
    t_first = t_rest = 0.0
    for it in range(args.steps):
        x, y = get_batch(train_data, args.batch_size, args.block_size, rng, args.device)
        lr = optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        loss = step(x, y).item()          # .item() waits for the step (and the GPU) to finish
        dt = time.perf_counter() - t0
        if it == 0:
            t_first = dt
        else:
            t_rest += dt
        scheduler.step()
        if it % args.log_interval == 0 or it == args.steps - 1:
            tps = tokens * it / t_rest if t_rest > 0 else float("nan")
            log(f"step {it:5d}  loss {loss:.4f}  lr {lr:.2e}  "
                  f"{tps:,.0f} tokens/s")

    model.eval()
    with tj.no_grad():
        val = [model(*get_batch(val_data, args.batch_size, args.block_size, rng,
                                args.device))[1].item() for _ in range(4)]
    log(f"first step {t_first:.2f} s"
          f"{' (tracing and compiling)' if args.compile else ''}; after it "
          f"{tokens * max(args.steps - 1, 0) / max(t_rest, 1e-9):,.0f} tokens/s")
    log(f"val loss {np.mean(val):.4f}")
    start = tj.tensor(data[None, :1], device=args.device)
    out = model.generate(start, args.sample_tokens, temperature=0.8, top_k=10)
    log("sample:\n" + "".join(chars[i] for i in out[0].cpu().numpy().tolist()))
    if args.ddp:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
