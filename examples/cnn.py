"""Train a small CNN with tracejit on images drawn with NumPy: circles, squares and crosses.

Every image is a 16x16 grey picture of one shape at a random position and size, with random
brightness, background and Gaussian noise; the label is the shape. Nothing is downloaded.
The network is Conv2d-BatchNorm2d-ReLU-MaxPool2d twice, then Linear, trained with
SGD(momentum=0.9, nesterov=True) and a step lr schedule; accuracy is measured in eval mode
(BatchNorm's running statistics) on images not seen in training.

    python examples/cnn.py                    # eager, CPU
    python examples/cnn.py --compile          # the whole training step compiled as one graph
    python examples/cnn.py --device cuda --steps 1000
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import tracejit as tj
import tracejit.nn as nn
from tracejit.nn import functional as F

CLASSES = ("circle", "square", "cross")
SIZE = 16


def draw_shapes(n: int, rng: np.random.Generator,
                noise: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """n images [n, 1, SIZE, SIZE] float32 and their labels (indices into CLASSES)."""
    labels = rng.integers(0, len(CLASSES), n)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    r = rng.uniform(3.0, 6.0, n)[:, None, None]
    cy = rng.uniform(r[:, 0, 0], SIZE - 1 - r[:, 0, 0])[:, None, None]
    cx = rng.uniform(r[:, 0, 0], SIZE - 1 - r[:, 0, 0])[:, None, None]
    dy, dx = yy - cy, xx - cx
    circle = np.abs(np.sqrt(dy ** 2 + dx ** 2) - r) < 0.9                      # a ring
    square = np.abs(np.maximum(np.abs(dy), np.abs(dx)) - r) < 0.9             # an outline
    cross = ((np.abs(dy) < 0.9) | (np.abs(dx) < 0.9)) & (np.maximum(np.abs(dy), np.abs(dx)) <= r)
    shape = np.where(labels[:, None, None] == 0, circle,
                     np.where(labels[:, None, None] == 1, square, cross))
    brightness = rng.uniform(0.5, 1.5, n)[:, None, None]
    background = rng.uniform(-0.3, 0.3, n)[:, None, None]
    images = background + brightness * shape + noise * rng.standard_normal((n, SIZE, SIZE))
    return images[:, None].astype(np.float32), labels


class ShapesNet(nn.Module):
    def __init__(self, channels: int = 8, classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d(2),                                   # 16 -> 8
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(2 * channels),
            nn.ReLU(),
            nn.MaxPool2d(2),                                   # 8 -> 4
        )
        self.classifier = nn.Linear(2 * channels * 4 * 4, classes)

    def forward(self, x: tj.Tensor) -> tj.Tensor:
        return self.classifier(self.features(x).flatten(1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--compile", action="store_true",
                   help="compile the whole step (forward, backward, SGD) as one graph")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--test-size", type=int, default=600)
    p.add_argument("--log-interval", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cuda" and not tj.cuda_available():
        raise SystemExit("--device cuda needs CuPy and an NVIDIA GPU")
    tj.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    test_x, test_y = draw_shapes(args.test_size, rng)

    model = ShapesNet(args.channels).to(args.device)
    optimizer = tj.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                             weight_decay=5e-4)
    scheduler = tj.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, args.steps // 3),
                                             gamma=0.3)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params} parameters, {'compiled step' if args.compile else 'eager'} "
          f"on {args.device}")

    def train_step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    step = tj.compile(train_step) if args.compile else train_step
    model.train()
    t_first = t_rest = 0.0
    for it in range(args.steps):
        images, labels = draw_shapes(args.batch_size, rng)      # fresh images every step
        x, y = tj.tensor(images, device=args.device), tj.tensor(labels, device=args.device)
        t0 = time.perf_counter()
        loss = step(x, y).item()          # .item() waits for the step (and the GPU) to finish
        dt = time.perf_counter() - t0
        if it == 0:
            t_first = dt
        else:
            t_rest += dt
        scheduler.step()
        if it % args.log_interval == 0 or it == args.steps - 1:
            print(f"step {it:5d}  loss {loss:.4f}")

    print(f"first step {t_first:.2f} s{' (tracing and compiling)' if args.compile else ''}; "
          f"after it {args.batch_size * max(args.steps - 1, 0) / max(t_rest, 1e-9):,.0f} "
          f"images/s")
    model.eval()
    with tj.no_grad():
        logits = model(tj.tensor(test_x, device=args.device))
    predicted = logits.argmax(dim=1).cpu().numpy()
    accuracy = float((predicted == test_y).mean())
    per_class = ", ".join(f"{name} {float((predicted[test_y == k] == k).mean()):.2f}"
                          for k, name in enumerate(CLASSES))
    print(f"eval accuracy {accuracy:.3f} on {args.test_size} new images ({per_class})")


if __name__ == "__main__":
    main()
