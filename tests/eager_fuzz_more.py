"""More op kinds for the eager differential fuzzer (tests/eager_fuzz_gen.py), used by seeds
70000 and up only, so that every earlier seed keeps its program: masked_fill (out of place and
in place), gather, scatter_add, scatter with distinct indices, index_add, cumsum, max/min along
a dim (values and indices), stable sort, topk (values; tied indices may differ from torch's CPU
kernel, see the README), comparisons and logical ops giving bool tensors that later ops take
as operands, and float16 programs.

`run(seed)` is eager_fuzz_gen.run with this program for seeds >= 70000."""
from __future__ import annotations

import numpy as np

import eager_fuzz_gen as G
from eager_fuzz_gen import TH, TJ

FIRST_SEED = 70000


class Program(G.Program):
    """eager_fuzz_gen's program plus the op kinds above (and float16 now and then)."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        if self.float and self.rng.random() < 0.15:
            self.dtype = np.float16

    def forward(self, n_ops: int) -> None:
        for _ in range(int(self.rng.integers(1, 4))):
            self.leaf()
        ops = [self.op_unary, self.op_binary, self.op_view, self.op_view, self.op_reduce,
               self.op_matmul, self.op_cat, self.op_inplace, self.op_inplace, self.op_hook,
               self.op_masked_fill, self.op_gather, self.op_scatter, self.op_scan,
               self.op_extreme, self.op_sort, self.op_logic]
        w = np.array([3, 3, 4, 3, 1.5, 0.7, 0.7, 2, 1, 1.5 if self.float else 0,
                      1.2, 1, 1, 0.8, 1, 0.8, 1])
        for _ in range(n_ops):
            ops[self.rng.choice(len(ops), p=w / w.sum())]()

    # float programs hold int64 (indices of sort/max) and bool (comparisons) tensors too: torch
    # has no integer or bool kernel for these (NotImplementedError, or an int64 result for an
    # empty softmax), where tracejit computes them in float32 (README, "Status and known gaps")
    FLOAT_ONLY = ("gelu", "gelu_tanh", "silu", "softmax", "log_softmax", "layer_norm")

    def op_unary(self):
        """eager_fuzz_gen's op_unary, whose float ops go to float tensors only."""
        if not self.float:
            return super().op_unary()
        p = self.pick()
        if p is None:
            return None
        x, y, d = p
        r = self.rng
        names = G.UNARY_FLOAT
        if not y.dtype.is_floating_point:           # (torch: no relu of bool either)
            names = [n for n in names if n not in self.FLOAT_ONLY and
                     (n != "relu" or y.dtype is not G.torch.bool)]
        name = str(r.choice(names))
        dim = int(r.integers(-x.ndim, x.ndim)) if x.ndim else None
        if name in ("softmax", "log_softmax", "layer_norm") and x.ndim == 0:
            return None
        self.apply(f"{name}({d}{'' if dim is None else ', dim=%d' % dim})",
                   lambda s: G.unary_float(s, x if s is TJ else y, name, dim))
        return None

    def op_matmul(self):
        """eager_fuzz_gen's op_matmul of a tensor of the program's dtype: torch refuses a
        bool or int64 (indices) operand with a float weight, where tracejit promotes (an
        inconclusive program, ended there)."""
        p = self.pick(lambda t: t.ndim in (1, 2, 3) and t.dtype == G.torch.tensor(
            np.zeros(0, self.dtype)).dtype)
        if p is None:
            return
        x, y, d = p
        k = y.shape[-1]
        n = int(self.rng.integers(1, 4))
        x2, y2 = self.leaf((k, n) if self.rng.random() < 0.8 else (k,), "w")
        d2 = self.leaves[-1][2]
        self.apply(f"{d} @ {d2}", lambda s: (x @ x2) if s is TJ else (y @ y2))

    # -- helpers ---------------------------------------------------------------------------
    def numeric(self):
        """A pooled tensor that is not bool (the float and integer op kinds' operand)."""
        return self.pick(lambda t: t.dtype is not G.torch.bool)

    def index_for(self, shape: tuple, dim: int, n: int, distinct: bool = False) -> np.ndarray:
        """int64 indices into `n` positions along `dim`, of a shape no larger than `shape`
        elsewhere (gather's and scatter's rule); distinct along dim when asked."""
        r = self.rng
        ishape = [int(r.integers(0, s + 1)) if r.random() < 0.3 else s for s in shape]
        if distinct:
            ishape[dim] = min(ishape[dim], n)
            idx = np.empty(ishape, np.int64)
            moved = np.moveaxis(idx, dim, -1)
            for pos in np.ndindex(*moved.shape[:-1]):
                moved[pos] = r.permutation(n)[:moved.shape[-1]]
            return idx
        return r.integers(0, max(n, 1), ishape).astype(np.int64)

    def leaf_like(self, shape: tuple, desc: str):
        x, y = self.leaf(shape, desc)
        return x, y, self.leaves[-1][2]

    # -- op kinds --------------------------------------------------------------------------
    def op_masked_fill(self):
        p = self.numeric()
        if p is None:
            return
        x, y, d = p
        r = self.rng
        shape = tuple(y.shape)
        mshape = tuple(1 if r.random() < 0.3 else n for n in shape)
        mask = r.random(mshape) < 0.5
        val = float(r.integers(-3, 4)) if r.random() < 0.8 else float("-inf")
        if not self.float:
            val = int(val) if np.isfinite(val) else 0
        inplace = r.random() < 0.35

        if inplace and any(st == 0 and n > 1 for st, n in zip(y.stride(), y.shape)):
            return      # (any write into an expanded view is refused: README; seed 80467)

        def f(s, t):
            m = s.index(mask)
            return t.masked_fill_(m, val) if inplace else t.masked_fill(m, val)
        self.apply(f"{d}.masked_fill{'_' if inplace else ''}(mask{list(mshape)}, {val})",
                   lambda s: f(s, x if s is TJ else y), add=not inplace, leaf_quirk=inplace)

    def op_gather(self):
        p = self.pick(lambda t: t.ndim >= 1 and t.dtype is not G.torch.bool)
        if p is None:
            return
        x, y, d = p
        dim = int(self.rng.integers(-y.ndim, y.ndim))
        idx = self.index_for(tuple(y.shape), dim % y.ndim, y.shape[dim])
        if y.shape[dim] == 0 and idx.size:
            return
        self.apply(f"gather({d}, {dim}, idx{list(idx.shape)})",
                   lambda s: s.lib.gather(x if s is TJ else y, dim, s.index(idx)))

    def op_scatter(self):
        p = self.pick(lambda t: t.ndim >= 1 and t.dtype is not G.torch.bool)
        if p is None:
            return
        x, y, d = p
        r = self.rng
        kind = str(r.choice(["scatter_add", "scatter", "index_add"]))
        dim = int(r.integers(0, y.ndim))
        n = y.shape[dim]
        if n == 0:
            return
        if kind == "index_add":
            k = int(r.integers(0, 5))
            idx = r.integers(0, n, k).astype(np.int64)
            sshape = tuple(k if i == dim else s for i, s in enumerate(y.shape))
        else:
            idx = self.index_for(tuple(y.shape), dim, n, distinct=kind == "scatter")
            sshape = tuple(idx.shape)
        x2, y2, d2 = self.leaf_like(sshape, "src")

        def f(s, t, src):
            i = s.index(idx)
            if kind == "scatter_add":
                return t.scatter_add(dim, i, src)
            if kind == "scatter":
                return t.scatter(dim, i, src)
            return t.index_add(dim, i, src, alpha=2)
        self.apply(f"{d}.{kind}({dim}, idx{list(idx.shape)}, {d2})",
                   lambda s: f(s, *((x, x2) if s is TJ else (y, y2))))

    def op_scan(self):
        p = self.pick(lambda t: t.ndim >= 1 and t.dtype is not G.torch.bool)
        if p is None:
            return
        x, y, d = p
        dim = int(self.rng.integers(-y.ndim, y.ndim))
        self.apply(f"{d}.cumsum({dim})", lambda s: (x if s is TJ else y).cumsum(dim))

    def op_extreme(self):
        p = self.pick(lambda t: t.ndim >= 1 and t.dtype is not G.torch.bool)
        if p is None:
            return
        x, y, d = p
        dim = int(self.rng.integers(-y.ndim, y.ndim))
        if y.shape[dim] == 0:
            return
        name = str(self.rng.choice(["max", "min"]))
        kd = bool(self.rng.random() < 0.4)
        if self.float:
            self.apply(f"{d}.{name}({dim}, keepdim={kd})",
                       lambda s: tuple(getattr(x if s is TJ else y, name)(dim, keepdim=kd)))
        else:       # integer ties: torch's CPU kernel's index among equals is its own
            self.apply(f"{d}.{name}({dim}, keepdim={kd}).values",
                       lambda s: getattr(x if s is TJ else y, name)(dim, keepdim=kd)[0])

    def op_sort(self):
        p = self.pick(lambda t: t.ndim >= 1 and t.dtype is not G.torch.bool)
        if p is None:
            return
        x, y, d = p
        r = self.rng
        dim = int(r.integers(-y.ndim, y.ndim))
        desc = bool(r.random() < 0.5)
        if r.random() < 0.5:
            self.apply(f"{d}.sort({dim}, descending={desc}, stable=True)",
                       lambda s: tuple((x if s is TJ else y).sort(dim=dim, descending=desc,
                                                                   stable=True)))
        else:
            k = int(r.integers(0, y.shape[dim] + 1))
            self.apply(f"{d}.topk({k}, {dim}, largest={not desc}).values",
                       lambda s: (x if s is TJ else y).topk(k, dim, largest=not desc)[0])

    def op_logic(self):
        p = self.pick()
        if p is None:
            return
        x, y, d = p
        r = self.rng
        x2, y2, d2 = self.other_for(tuple(y.shape))
        kind = str(r.choice(["cmp", "cmp", "and", "or", "xor", "not", "where", "mul_mask",
                             "any", "all"]))
        cmp = str(r.choice(["gt", "ge", "lt", "le", "eq", "ne"]))

        def f(s, a, b):
            lib = s.lib
            m = getattr(a, cmp)(b)
            if kind == "cmp":
                return m
            if kind == "not":
                return ~m
            if kind in ("and", "or", "xor"):
                return getattr(lib, f"logical_{kind}")(m, b > 0)
            if kind == "where":
                return lib.where(m, a, b)
            if kind == "mul_mask":
                return a * m
            return getattr(m, kind)()
        self.apply(f"{kind}({d} {cmp} {d2})", lambda s: f(s, *((x, x2) if s is TJ else (y, y2))))


def run(seed: int, n_ops: int | None = None) -> str:
    """eager_fuzz_gen.run, with this module's program for seeds >= FIRST_SEED."""
    if seed < FIRST_SEED:
        return G.run(seed, n_ops)
    return G.run(seed, n_ops, program=Program)


__all__ = ["Program", "run", "FIRST_SEED", "TJ", "TH"]
