"""codegen.memplan places each buffer (largest first) at the first gap, in offset order, among
the placed buffers alive at the same time. It walks the placed buffers in offset order up to
that gap instead of sorting the live ones per buffer (quadratic in a deep model's hundreds of
intermediates); the plan must be exactly the one the plain first-fit rule gives, written out
here, on random lifetimes and sizes (zero sizes, ties and equal offsets included)."""
from __future__ import annotations

import random

import pytest

from tracejit.codegen.memplan import _align, lifetimes, plan_memory


def _first_fit(sizes: dict, steps: list) -> dict:
    keys = list(sizes)
    lives = lifetimes(steps, keys)
    aligned = {k: _align(sizes[k]) for k in keys}
    offsets: dict = {}
    placed: list = []
    for i in sorted(range(len(keys)), key=lambda i: (-aligned[keys[i]], lives[keys[i]][0], i)):
        k = keys[i]
        b0, b1 = lives[k]
        busy = sorted((offsets[p], offsets[p] + aligned[p]) for p in placed
                      if aligned[p] and lives[p][0] <= b1 and b0 <= lives[p][1])
        off = 0
        for lo, hi in busy:
            if lo - off >= aligned[k]:
                break
            off = max(off, hi)
        offsets[k] = off
        placed.append(k)
    return offsets


@pytest.mark.parametrize("seed", range(4))
def test_plan_is_the_plain_first_fit(seed):
    rng = random.Random(seed)
    for _ in range(400):
        n = rng.randint(0, 40)
        sizes = {f"b{i}": rng.choice([0, 1, 64, 65, 128, 1000, 4096, rng.randint(0, 5000)])
                 for i in range(n)}
        names = list(sizes)
        steps = [[rng.choice(names) for _ in range(rng.randint(0, 4))] if n else []
                 for _ in range(rng.randint(1, 30))]
        plan = plan_memory(sizes, steps, share=True)
        assert plan.offsets == _first_fit(sizes, steps)
        assert plan.overlapping_pairs() == []
        assert plan.arena_bytes == max((plan.offsets[k] + _align(sizes[k]) for k in sizes),
                                       default=0)
