"""How reductions over leading axes are scheduled (a column sum, a bias gradient, col2im's sum
over its taps): rows outer, the kept trailing axes inner and contiguous. The order of additions
is the same on both targets (codegen.schedule states it): rows in groups of `row_unroll` (four,
or one under a long row expression) added as a balanced tree, and chunks of rows
(`leading_split`) summed on their own, then in chunk order."""
from __future__ import annotations

import numpy as np

from ..ir.core import Aval, Value
from . import loops as L
from .fusion import Kernel
from .fusion_cost import FREE
from .schedule_reduce import (LOOP_BLOCK, MAX_GRID, ReduceScheduler, _cast, _Names, _nest,
                              _size, _unflatten, acc_dtype, parallel_extent)

COLUMN_TILE = 512         # accumulators of a CPU column tile (4 KiB of float64, held in L1)
ROW_UNROLL = 4            # rows a column reduction adds as a tree before updating its accumulator
SHORT_ROWS = 16           # ... and up to this many rows are all written out with literal indices
SPLIT_ROWS_MIN = 32       # a chunk of a split leading reduction has at least this many rows
SPLIT_WORK = 1 << 16      # ... and the split aims at this many (chunk, column) work items
CPU_SPLIT_COLS = 256      # CPU: fewer columns than this cannot keep threads busy: split rows
CPU_SPLIT_MIN = 1 << 17   # ... when the input is big enough to be worth several threads
LONG_ROW_OPS = 12         # a row expression of more arithmetic ops than this: rows one by one


def is_leading(k: Kernel) -> bool:
    axes = k.instr.params["axes"]
    return bool(axes) and tuple(axes) == tuple(range(len(axes))) and len(axes) < len(k.shape)


def leading_split(rows: int, cols: int) -> tuple[int, int]:
    """(chunks, rows per chunk) of a leading-axis reduction of `rows` rows and `cols` columns:
    one chunk unless the columns alone give too little parallel work. A function of the shape
    only, so that every target adds in the same order."""
    if cols == 0 or rows < 2 * SPLIT_ROWS_MIN:
        return 1, rows
    chunks = min(rows // SPLIT_ROWS_MIN, -(-SPLIT_WORK // cols))
    if chunks <= 1:
        return 1, rows
    per = -(-rows // chunks)
    per = -(-per // ROW_UNROLL) * ROW_UNROLL
    return -(-rows // per), per


def row_unroll(k: Kernel) -> int:
    """Rows a group adds as a tree before updating its accumulator: ROW_UNROLL for a short row
    expression (a column sum or a bias gradient, whose cost is the accumulator's loads and
    stores), one for a long fused expression (LONG_ROW_OPS), whose row already has its own
    instruction-level parallelism. Written out four times, such an expression was the heaviest
    module LLVM compiled for a nanoGPT step (its layer-0 layer-norm weight gradient, which
    recomputes the embeddings: ~100 ms of LLVM, a plain column sum ~55 ms). A function of the
    kernel alone, so that both targets add in the same order."""
    ops = sum(op.prim.name not in FREE for op in k.ops)
    return 1 if ops > LONG_ROW_OPS else ROW_UNROLL


def _column_tiling(kept: tuple[int, ...]) -> tuple[int, int]:
    """How a CPU column reduction over kept axes is tiled: (p, block). Axes after p are covered
    whole, axis p in blocks of `block` indices, so that a tile is at most COLUMN_TILE
    accumulators and each row's part of it is contiguous. Axis 0 is never covered whole: the
    threads split it."""
    p, inner = len(kept) - 1, 1
    while p > 0 and inner * kept[p] <= COLUMN_TILE:
        inner *= kept[p]
        p -= 1
    return p, max(COLUMN_TILE // max(inner, 1), 1)


class LeadingScheduler(ReduceScheduler):
    """ReduceScheduler with the leading-axis schedules; codegen.schedule's Scheduler builds on
    it."""

    def reduce(self, k: Kernel, name: str) -> L.Scheduled:
        if is_leading(k):
            return self.reduce_leading(k, name)
        return super().reduce(k, name)

    def _row_groups(self, names: _Names, x: Value, red, lo: L.Ix, count: int | L.Ix,
                    col: list[L.Ix], upd, width: int) -> list:
        """Rows lo .. lo+count of the flattened reduced axes `red` in groups of `width`
        (`row_unroll`) added as a balanced tree, then the rest one by one. upd(row index
        vectors) gives the update; col is the kept index."""
        def group(base, n):
            stmts, items = [], []
            for u in range(n):
                un, ridx = _unflatten(names, L.add(base, L.Lit(u)), red, "w")
                stmts.append(un)
                items.append(ridx)
            return stmts, items
        out = []
        g = names("g")
        if isinstance(count, int) and isinstance(lo, L.Lit) and count <= SHORT_ROWS:
            # few rows (col2im's kH*kW taps): the same groups, each row at literal indices, so
            # that the index arithmetic of every row folds (a tap's bounds checks included)
            rows = [[L.Lit(int(i)) for i in np.unravel_index(lo.value + r, red)]
                    for r in range(count)]
            cut = count - count % width
            for b in range(0, cut, width):
                out += upd(rows[b:b + width])
            for r in rows[cut:]:
                out += upd([r])
            return out
        if isinstance(count, int):
            full, rest = count // width, count % width
            if full:
                stmts, items = group(L.add(lo, L.mul(L.Var(g), width)), width)
                out.append(L.Loop(g, L.Lit(full), stmts + upd(items)))
            for u in range(rest):
                stmts, items = group(L.add(lo, L.Lit(full * width + u)), 1)
                out += stmts + upd(items)
            return out
        # a dynamic count (the last chunk on the GPU): groups, then a loop over the rest
        cnt = names("n")
        out.append(L.Let(cnt, count))
        stmts, items = group(L.add(lo, L.mul(L.Var(g), width)), width)
        out.append(L.Loop(g, L.Div(L.Var(cnt), width), stmts + upd(items)))
        if width == 1:
            return out
        r, start = names("r"), names("s")
        out.append(L.Let(start, L.add(lo, L.mul(L.Div(L.Var(cnt), width), width))))
        stmts, items = group(L.add(L.Var(start), L.Var(r)), 1)
        rest = L.add(L.Var(cnt), L.mul(L.Div(L.Var(cnt), width), -width))
        out.append(L.Loop(r, rest, stmts + upd(items)))
        return out

    def reduce_leading(self, k: Kernel, name: str) -> L.Scheduled:
        """A reduction over leading axes: rows outer, the kept trailing axes inner and
        contiguous, in the order the module docstring states for both targets."""
        ins = k.instr
        op, m = ins.prim.name, len(ins.params["axes"])
        x, out = ins.inputs[0], ins.out
        red, kept = x.shape[:m], x.shape[m:]
        n_rows, n_cols = _size(red), _size(kept)
        chunks, per = leading_split(n_rows, n_cols)
        adt = acc_dtype(op, out.dtype)
        names: _Names = _Names()

        def tree(items, col):
            return L.Tree(op, [_cast(L.Eval(x, list(r) + col), x.dtype, adt) for r in items])
        split = f"two-stage: {chunks} chunks of {per} rows, then a finishing step" \
            if chunks > 1 else "serial down each column"
        if self.gpu:
            return self._leading_gpu(k, name, names, tree, red, kept, chunks, per, adt, split)
        if chunks > 1 and len(kept) == 1 and n_cols < CPU_SPLIT_COLS and \
                _size(x.shape) >= CPU_SPLIT_MIN:
            return self._leading_cpu_split(k, name, names, tree, chunks, per, adt, split)
        if chunks == 1 and n_rows <= SHORT_ROWS:
            return self._leading_short(k, name, names, tree, red, kept, adt, split)
        p, block = _column_tiling(kept)
        inner = kept[p + 1:]
        inner_size = _size(inner)
        tot = L.Acc(names("tot"), adt, op, size=COLUMN_TILE)
        part = L.Acc(names("part"), adt, op, size=COLUMN_TILE)
        accs = [tot] + ([part] if chunks > 1 else [])

        def tiles(oidx):
            lo, hi = (L.BEGIN, L.END) if p == 0 else (L.Lit(0), L.Lit(kept[p]))
            t, first, width = names("t"), names("first"), names("n")
            span = L.add(hi, L.mul(lo, -1))

            def cols(fn):
                return _nest(names, [L.Var(width)] + list(inner),
                             lambda j: fn(j), vector=self._vec(), prefix="j")

            def at(j):
                return L.add(L.mul(j[0], inner_size), L.linear(j[1:], inner))

            def col(j):
                return list(oidx) + [L.add(L.Var(first), j[0])] + list(j[1:])

            def rows(acc, lo_row, count):
                return self._row_groups(names, x, red, lo_row, count, [], lambda items: cols(
                    lambda j: [L.Update(acc.name, tree(items, col(j)), at(j))]), row_unroll(k))
            body = [L.Let(first, L.add(lo, L.mul(L.Var(t), block))),
                    L.Let(width, L.Min(L.add(hi, L.mul(L.Var(first), -1)), L.Lit(block))),
                    *cols(lambda j: [L.Reset(tot.name, at(j))])]
            if chunks == 1:
                body += rows(tot, L.Lit(0), n_rows)
            else:
                def chunk(base, count):
                    return [*cols(lambda j: [L.Reset(part.name, at(j))]),
                            *rows(part, base, count),
                            *cols(lambda j: [L.Update(tot.name, L.AccGet(part.name, at(j)),
                                                      at(j))])]
                full, last = n_rows // per, n_rows % per
                c = names("c")
                body.append(L.Loop(c, L.Lit(full), chunk(L.mul(L.Var(c), per), per)))
                if last:
                    body += chunk(L.Lit(full * per), last)
            body += cols(lambda j: [L.Store(out, L.linear(col(j), out.shape),
                                            _cast(L.AccGet(tot.name, at(j)), adt, out.dtype))])
            count = L.Div(L.add(span, L.Lit(block - 1)), block)
            return [L.Loop(t, count, body)]
        body = _nest(names, kept[:p], tiles, "threads", prefix="o") if p > 0 else tiles([])
        return L.Scheduled(k, [self._kernel(name, k.inputs, k.outputs, accs + body, accs,
                                            extent=parallel_extent(k))],
                           note=f"{split}; column tiles of {block * inner_size}")

    def _leading_short(self, k, name, names, tree, red, kept, adt, split):
        """Few rows (col2im's kH*kW taps): one vectorized pass over the columns, each adding
        its rows into a scalar accumulator in the groups and order of the column tiles (and of
        the GPU's thread per column), instead of a pass over an accumulator tile per group."""
        op, out = k.instr.prim.name, k.instr.out
        acc = L.Acc(names("acc"), adt, op)

        def column(oidx):
            upd = lambda items: [L.Update(acc.name, tree(items, oidx))]     # noqa: E731
            return [acc, *self._row_groups(names, k.instr.inputs[0], red, L.Lit(0),
                                           _size(red), oidx, upd, row_unroll(k)),
                    L.Store(out, L.linear(oidx, out.shape),
                            _cast(L.AccGet(acc.name), adt, out.dtype))]
        body = _nest(names, kept, column, "threads", vector=self._vec(), prefix="o")
        return L.Scheduled(k, [self._kernel(name, k.inputs, k.outputs, body, [acc],
                                            extent=parallel_extent(k))],
                           note=f"{split}; {_size(red)} rows written out per column")

    def _leading_cpu_split(self, k, name, names, tree, chunks, per, adt, split):
        """Few columns, many rows: threads take ranges of chunks, each chunk's column sums
        go to a scratch buffer, then a finishing kernel (threads over columns) adds each
        column's chunk sums in chunk order, as the GPU's two stages do."""
        ins = k.instr
        op, x, out = ins.prim.name, ins.inputs[0], ins.out
        red = x.shape[:len(ins.params["axes"])]
        n_rows, n_cols = _size(red), out.aval.size
        part = Value(Aval((chunks * n_cols,), adt), None, name=f"{name}_partials")
        acc = L.Acc(names("part"), adt, op, size=COLUMN_TILE)
        c, lo = names("c"), names("lo")

        def cols(fn):
            return _nest(names, [n_cols], fn, vector=self._vec(), prefix="j")
        count = L.Min(L.add(L.Lit(n_rows), L.mul(L.Var(lo), -1)), L.Lit(per))
        body = [acc, L.Loop(c, L.Lit(chunks), [
            L.Let(lo, L.mul(L.Var(c), per)),
            *cols(lambda j: [L.Reset(acc.name, j[0])]),
            *self._row_groups(names, x, red, L.Var(lo), count, [], lambda items: cols(
                lambda j: [L.Update(acc.name, tree(items, j), j[0])]), row_unroll(k)),
            *cols(lambda j: [L.Store(part, L.add(L.mul(L.Var(c), n_cols), j[0]),
                                     L.AccGet(acc.name, j[0]))])], par="threads")]
        first = self._kernel(name, k.inputs, [part], body, [acc], extent=chunks)
        finish = self._finish(name, part, out, op, adt, chunks, n_cols, "threads",
                              extent=n_cols)
        return L.Scheduled(k, [first, finish], [part],
                           note=split + "; threads split the chunks, then the columns")

    def _finish(self, name, part, out, op, adt, chunks, n_cols, par, *launch, **kw):
        """The second stage of a split leading-axis reduction, on either target: each output
        column combines its `chunks` partials in chunk order (the CPU's and the GPU's order of
        additions are the same)."""
        names = _Names()
        fin = L.Acc(names("acc"), adt, op)
        o, c = names("o"), names("c")
        body = [L.Loop(o, L.Lit(n_cols), [
            fin, L.Loop(c, L.Lit(chunks), [L.Update(fin.name, L.LoadFlat(
                part, L.add(L.mul(L.Var(c), n_cols), L.Var(o))))]),
            L.Store(out, L.Var(o), _cast(L.AccGet(fin.name), adt, out.dtype))], par=par)]
        return self._kernel(name + "_finish", [part], [out], body, [fin], *launch, **kw)

    def _leading_gpu(self, k, name, names, tree, red, kept, chunks, per, adt, split):
        ins = k.instr
        op, x, out = ins.prim.name, ins.inputs[0], ins.out
        n_rows, n_cols = _size(red), _size(kept)
        acc = L.Acc(names("acc"), adt, op)

        def upd(items):
            return [L.Update(acc.name, tree(items, oidx))]
        if chunks == 1:           # a thread per output, walking down its column (coalesced)
            o = names("o")
            un, oidx = _unflatten(names, L.Var(o), kept)
            body = [L.Loop(o, L.Lit(n_cols), [
                un, acc, *self._row_groups(names, x, red, L.Lit(0), n_rows, oidx, upd,
                                           row_unroll(k)),
                L.Store(out, L.Var(o), _cast(L.AccGet(acc.name), adt, out.dtype))], par="grid")]
            return L.Scheduled(k, [self._kernel(
                name, k.inputs, k.outputs, body, [acc], min(-(-n_cols // LOOP_BLOCK), MAX_GRID),
                LOOP_BLOCK, loop_sizes=[_size(x.shape)])], note=split + ", a thread per column")
        part = Value(Aval((chunks * n_cols,), adt), None, name=f"{name}_partials")
        t, lo = names("t"), names("lo")
        un1, (c, o) = _unflatten(names, L.Var(t), (chunks, n_cols))
        un, oidx = _unflatten(names, o, kept)
        count = L.Min(L.add(L.Lit(n_rows), L.mul(L.Var(lo), -1)), L.Lit(per))
        body = [L.Loop(t, L.Lit(chunks * n_cols), [
            un1, un, L.Let(lo, L.mul(c, per)), acc,
            *self._row_groups(names, x, red, L.Var(lo), count, oidx, upd, row_unroll(k)),
            L.Store(part, L.Var(t), L.AccGet(acc.name))], par="grid")]
        first = self._kernel(name, k.inputs, [part], body, [acc],
                             min(-(-chunks * n_cols // LOOP_BLOCK), MAX_GRID), LOOP_BLOCK,
                             loop_sizes=[_size(x.shape)])
        finish = self._finish(name, part, out, op, adt, chunks, n_cols, "grid",
                              min(-(-n_cols // LOOP_BLOCK), MAX_GRID), LOOP_BLOCK,
                              loop_sizes=[chunks * n_cols])
        return L.Scheduled(k, [first, finish], [part], note=split)
