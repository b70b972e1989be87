"""The eager differential fuzzer with the op families of tests/fuzz_ops_ext.py (reductions over
dim tuples, elementwise math, integer/bool arithmetic and casts, shape ops, in-place ops on
views, nn.functional ops) on top of eager_fuzz_more's, for seeds >= 90000 only (earlier seeds
keep their programs); a tenth of its programs are int32 and a twentieth bool.

`run(seed)` is eager_fuzz_more.run with this program for seeds >= EXT_SEED. By hand:
`python -c "import eager_fuzz_ext as X; [X.run(s) for s in range(90000, 90500)]"` in tests/."""
from __future__ import annotations

import numpy as np

import eager_fuzz_gen as G
import eager_fuzz_more as M
from eager_fuzz_gen import TH, TJ
from fuzz_ops_ext import EXT_SEED, draw


class Program(M.Program):
    """eager_fuzz_more's program plus fuzz_ops_ext's op families (and int32 or bool data)."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        side = np.random.default_rng([seed, 99])
        c = side.random()
        if c < 0.1:
            self.dtype, self.float = np.int32, False
        elif c < 0.15:
            self.dtype, self.float = np.bool_, False

    def array(self, shape) -> np.ndarray:
        if self.dtype is np.bool_:
            return self.rng.random(shape) < 0.5
        return super().array(shape)

    def forward(self, n_ops: int) -> None:
        for _ in range(int(self.rng.integers(1, 4))):
            self.leaf()
        ops = [self.op_unary, self.op_binary, self.op_view, self.op_view, self.op_reduce,
               self.op_matmul, self.op_cat, self.op_inplace, self.op_inplace, self.op_hook,
               self.op_masked_fill, self.op_gather, self.op_scatter, self.op_scan,
               self.op_extreme, self.op_sort, self.op_logic, self.op_ext]
        w = np.array([3, 3, 4, 3, 1.5, 0.7, 0.7, 2, 1, 1.5 if self.float else 0,
                      1.2, 1, 1, 0.8, 1, 0.8, 1, 8])
        for _ in range(n_ops):
            ops[self.rng.choice(len(ops), p=w / w.sum())]()

    def op_matmul(self):
        if self.dtype is np.bool_:
            return      # (torch has no bool matmul; tracejit's is an int64 count: README)
        super().op_matmul()

    def op_ext(self):
        p = self.pick()
        if p is None:
            return
        x, y, d = p
        op = draw(self.rng, y, self.float)
        if op is None:
            return
        x2 = y2 = None
        d2 = ""
        if op.other:
            x2, y2, d2 = self.other_for(tuple(y.shape))
        if op.inplace:
            if any(st == 0 and n > 1 for st, n in zip(y.stride(), y.shape)):
                return      # (any write into an expanded view is refused: README)
            if y2 is not None and y2.untyped_storage().data_ptr() == \
                    y.untyped_storage().data_ptr():
                return      # torch refuses an operand overlapping the written tensor
        rec = getattr(x, "_view", None)
        root = getattr(rec, "root", x)
        quirk = op.inplace and not (root.is_leaf and root.requires_grad) and \
            not (x.is_leaf and x.requires_grad)
        self.apply(f"{d}.{op.desc}({d2})",
                   lambda s: op.fn(s.lib, s.F, s.index, *((x, x2) if s is TJ else (y, y2))),
                   add=not op.inplace, leaf_quirk=quirk)


def run(seed: int, n_ops: int | None = None) -> str:
    """eager_fuzz_more.run, with this module's program for seeds >= EXT_SEED."""
    if seed < EXT_SEED:
        return M.run(seed, n_ops)
    return G.run(seed, n_ops, program=Program)


__all__ = ["Program", "run", "TJ", "TH"]
