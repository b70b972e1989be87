"""Random programs for the COMPILED-vs-torch tester (tests/compiled_fuzz_run.py runs them).

A program is a list of steps over an environment of values: `env[k]` is a leaf (an argument, a
NumPy argument, a captured global, a module parameter, a Python scalar) or an op's result. Each
step is `fn(side, env) -> list of new values` (an in-place step returns none and changes a value
in place, which every view of it must follow). The same steps replay on torch (the reference,
run eagerly) and on tracejit inside `tj.compile`, `tj.grad`, a compiled module or a compiled
training step, so the generator needs no traced values: it builds the program by running each
op on torch once, keeping only the ops torch accepts (their shapes drive the next choices).

The ops are the eager fuzzer's (tests/eager_fuzz_gen.py): views (slices with steps, flips,
transposes, expand, unsqueeze, chunk/split, narrow, select, advanced indexing, diagonal),
in-place ops on views and on their bases (also under no_grad), broadcasting binaries, fused
composites, matmul, reductions, cat/stack, and uses of a Python scalar argument."""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as thF

import tracejit as tj
import tracejit.nn.functional as tjF

from eager_fuzz_gen import _broadcasts, _factor, random_basic_key
from fuzz_ops_ext import EXT_SEED, draw

FLOATS = (np.float32, np.float64)
VIEW_LAYOUTS = ("tview", "sview", "bview")


class Side:
    def __init__(self, lib, F) -> None:
        self.lib, self.F = lib, F

    def const(self, a: np.ndarray):
        return torch.tensor(a) if self.lib is torch else tj.tensor(a)


TJS, THS = Side(tj, tjF), Side(torch, thF)


class Leaf:
    """role: arg (a Tensor argument), np (a NumPy argument), cap (a captured global),
    param (an nn.Parameter of the module), scalar (a Python float argument).
    layout: contiguous, strided (every other element of a wider array) or transposed; for
    arguments and captures also a view of an eager base (VIEW_LAYOUTS: a transposed view, a
    strided slice, or for arguments an expand (a broadcast, stride 0) of the base's first
    column), which a compiled in-place write reaches through the view."""

    def __init__(self, name: str, role: str, array, grad: bool, layout: str) -> None:
        self.name, self.role, self.array, self.grad, self.layout = name, role, array, grad, layout
        self.slot = -1                       # its place in the program's environment

    def __repr__(self) -> str:
        shape = "" if self.role == "scalar" else list(np.shape(self.array))
        return f"{self.name}:{self.role}{shape} grad={self.grad} {self.layout}"


class Program:
    def __init__(self, seed: int, roles: dict, dtype=None, n_ops: int | None = None) -> None:
        self.seed = seed
        self.rng = r = np.random.default_rng(seed)
        if dtype is None:
            dtype = [np.float32, np.float64, np.int64][r.choice(3, p=[0.55, 0.35, 0.10])]
        self.dtype = dtype
        self.float = dtype in FLOATS
        self.roles = roles                   # role -> weight for new leaves
        self.leaves: list[Leaf] = []
        self.env: list = []                  # torch values while generating
        self.pool: list[tuple[int, str]] = []
        self.steps: list[tuple] = []         # (desc, fn or leaf number, kind)
        self.n_ops = int(r.integers(3, 14)) if n_ops is None else n_ops
        self._generate()

    # -- leaves ------------------------------------------------------------------------------
    def shape(self) -> tuple:
        r = self.rng
        nd = int(r.choice(4, p=[0.05, 0.2, 0.5, 0.25]))
        return tuple(int(r.choice([0, 1, 2, 3, 4, 5], p=[.04, .16, .25, .25, .15, .15]))
                     for _ in range(nd))

    def array(self, shape, rng=None):
        r = self.rng if rng is None else rng
        if self.float:
            return r.standard_normal(shape).astype(self.dtype)
        return r.integers(-4, 5, shape).astype(self.dtype)

    def leaf(self, shape=None, role=None) -> int:
        r = self.rng
        shape = self.shape() if shape is None else shape
        if role is None:
            names = [k for k in self.roles if k != "scalar"]
            w = np.array([self.roles[k] for k in names], float)
            role = str(names[r.choice(len(names), p=w / w.sum())])
        if role == "param" and not self.float:
            role = "arg"
        grad = self.float and role != "np" and (role == "param" or r.random() < 0.8)
        layout = str(r.choice(["contiguous", "strided", "transposed"], p=[.6, .25, .15]))
        if layout == "contiguous" and role in ("arg", "cap") and shape:
            # (a generator of its own: the main one's draws, and so the older seeds'
            # programs, stay as they were)
            side = np.random.default_rng([self.seed, len(self.leaves), 17])
            if side.random() < 0.4:
                # (a capture's new values are copied into it between calls: not expanded)
                layout = str(side.choice(VIEW_LAYOUTS if role == "arg" else VIEW_LAYOUTS[:2]))
                grad = False        # (written in place: a view that requires grad is refused)
        lf = Leaf(f"{role[0]}{len(self.leaves)}", role, self.array(shape), grad, layout)
        return self._add_leaf(lf)

    def _add_leaf(self, lf: Leaf) -> int:
        self.leaves.append(lf)
        lf.slot = len(self.env)
        self.env.append(make_value(lf, lf.array, THS))
        self.steps.append((repr(lf), len(self.leaves) - 1, "leaf"))
        if lf.role != "scalar":
            self.pool.append((lf.slot, lf.name))
        return lf.slot

    def scalar_leaf(self) -> int:
        for lf in self.leaves:
            if lf.role == "scalar":
                return lf.slot
        return self._add_leaf(Leaf(f"s{len(self.leaves)}", "scalar",
                                   float(self.rng.integers(-3, 4)) + 0.5, False, "contiguous"))

    # -- recording ---------------------------------------------------------------------------
    def pick(self, pred=None):
        c = [p for p in self.pool if pred is None or pred(self.env[p[0]])]
        return None if not c else c[int(self.rng.integers(len(c)))]

    def record(self, desc: str, fn, inplace: bool = False):
        """Run fn on the torch values; keep the step if torch accepts it."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = fn(THS, self.env)
        except (RuntimeError, ValueError, TypeError, IndexError):
            return None
        self.steps.append((desc, fn, "inplace" if inplace else "op"))
        if inplace:
            return []
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        first = len(self.env)
        self.env.extend(outs)
        for k in range(len(outs)):
            self.pool.append((first + k, desc if len(outs) == 1 else f"{desc}[{k}]"))
        return list(range(first, first + len(outs)))

    # -- ops ---------------------------------------------------------------------------------
    def op_unary(self):
        p = self.pick()
        if p is None:
            return
        i, d = p
        r = self.rng
        t0 = self.env[i]
        if not self.float:
            name = str(r.choice(["neg", "abs", "square", "mul2", "clone"]))
            g = {"neg": lambda t: -t, "abs": lambda t: t.abs(), "square": lambda t: t * t,
                 "mul2": lambda t: t * 2 + 1, "clone": lambda t: t.clone()}[name]
            self.record(f"{name}({d})", lambda s, e: g(e[i]))
            return
        name = str(r.choice(["exp", "tanh", "sigmoid", "relu", "neg", "abs", "sin", "square",
                             "sqrt", "log", "gelu", "softmax", "log_softmax", "layer_norm",
                             "scale", "rsub", "pow", "clone", "silu", "gelu_tanh", "div_s",
                             "sum_keep_sub"]))
        dim = int(r.integers(-t0.ndim, t0.ndim)) if t0.ndim else None
        if name in ("softmax", "log_softmax", "layer_norm", "sum_keep_sub") and t0.ndim == 0:
            return

        def f(s, e):
            t, F = e[i], s.F
            return {
                "exp": lambda: t.clamp(-4, 4).exp(), "tanh": lambda: t.tanh(),
                "sigmoid": lambda: t.sigmoid(), "relu": lambda: F.relu(t), "neg": lambda: -t,
                "abs": lambda: t.abs(), "sin": lambda: t.sin(), "square": lambda: t * t,
                "sqrt": lambda: (t.abs() + 0.1).sqrt(), "log": lambda: (t.abs() + 0.5).log(),
                "gelu": lambda: F.gelu(t), "gelu_tanh": lambda: F.gelu(t, approximate="tanh"),
                "silu": lambda: F.silu(t),
                "softmax": lambda: F.softmax(t, dim=dim),
                "log_softmax": lambda: F.log_softmax(t, dim=dim),
                "layer_norm": lambda: F.layer_norm(t, t.shape[-1:]),
                "scale": lambda: t * 1.5 + 0.25, "rsub": lambda: 2.0 - t,
                "pow": lambda: t ** 2, "clone": lambda: t.clone(), "div_s": lambda: t / 3.0,
                "sum_keep_sub": lambda: t - t.sum(dim, keepdim=True),
            }[name]()
        self.record(f"{name}({d}{'' if dim is None else ', dim=%d' % dim})", f)

    def op_scalar(self):
        """A use of the Python scalar argument (a traced, weakly typed 0-d value)."""
        p = self.pick()
        if p is None or "scalar" not in self.roles:
            return
        i, d = p
        k = self.scalar_leaf()
        how = int(self.rng.integers(3))
        f = [lambda s, e: e[i] * e[k], lambda s, e: e[k] - e[i], lambda s, e: e[i] + e[k] * 2]
        self.record(f"scalar{how}({d}, {self.pool_desc(k)})", f[how])

    def other_for(self, shape: tuple) -> tuple[int, str]:
        r = self.rng
        if r.random() < 0.5:
            p = self.pick(lambda t: _broadcasts(tuple(t.shape), shape))
            if p is not None:
                return p
        kind = r.integers(4)
        if kind == 0 or not shape:
            s = shape
        elif kind == 1:
            s = shape[int(r.integers(len(shape))):]
        elif kind == 2:
            s = tuple(1 if r.random() < 0.5 else n for n in shape)
        else:
            s = (1,) * int(r.integers(1, 3)) + shape
        k = self.leaf(s)
        return k, self.leaves[-1].name

    def op_binary(self):
        p = self.pick()
        if p is None:
            return
        i, d = p
        j, d2 = self.other_for(tuple(self.env[i].shape))
        r = self.rng
        names = ["add", "sub", "mul", "max", "min", "where"]
        if self.float:
            names += ["div", "add_alpha"]
        name = str(r.choice(names))
        if r.random() < 0.5:
            i, d, j, d2 = j, d2, i, d

        def f(s, e):
            a, b, lib = e[i], e[j], s.lib
            return {
                "add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b,
                "max": lambda: lib.maximum(a, b), "min": lambda: lib.minimum(a, b),
                "where": lambda: lib.where(a > b, a, b * 2),
                "div": lambda: a / (b.abs() + 0.5), "add_alpha": lambda: a.add(b, alpha=2),
            }[name]()
        self.record(f"{name}({d}, {d2})", f)

    def basic_key(self, shape: tuple):
        return random_basic_key(self.rng, shape)

    def op_view(self):
        p = self.pick()
        if p is None:
            return
        i, d = p
        r = self.rng
        t0 = self.env[i]
        shape, nd = tuple(t0.shape), t0.ndim
        kinds = ["index", "index", "index", "unsqueeze", "flip", "reshape", "expand", "chunk",
                 "split", "narrow", "select", "adv", "unbind", "view", "detach", "contig",
                 "diagonal", "flatten"]
        if nd >= 2:
            kinds += ["transpose", "T", "mT", "permute", "t"] * 2
        if nd == 1:
            kinds += ["t"]
        if 1 in shape:
            kinds += ["squeeze"]
        kind = str(r.choice(kinds))
        ax = int(r.integers(-nd, nd)) if nd else 0
        rec = self.record
        if kind == "index":
            key = self.basic_key(shape)
            rec(f"{d}[{key!r}]", lambda s, e: e[i][key])
        elif kind == "unsqueeze":
            a = int(r.integers(-nd - 1, nd + 1))
            rec(f"{d}.unsqueeze({a})", lambda s, e: e[i].unsqueeze(a))
        elif kind == "squeeze":
            a = shape.index(1)
            rec(f"{d}.squeeze({a})", lambda s, e: e[i].squeeze(a))
        elif kind == "flip" and nd:
            rec(f"{d}.flip({ax})", lambda s, e: e[i].flip(ax))
        elif kind == "transpose":
            b = int(r.integers(-nd, nd))
            rec(f"{d}.transpose({ax},{b})", lambda s, e: e[i].transpose(ax, b))
        elif kind == "T" and nd == 2:
            rec(f"{d}.T", lambda s, e: e[i].T)
        elif kind == "mT":
            rec(f"{d}.mT", lambda s, e: e[i].mT)
        elif kind == "t":
            rec(f"{d}.t()", lambda s, e: e[i].t())
        elif kind == "permute":
            perm = tuple(int(k) for k in r.permutation(nd))
            rec(f"{d}.permute{perm}", lambda s, e: e[i].permute(*perm))
        elif kind in ("reshape", "view"):
            new = _factor(shape, r)
            if kind == "view" and not t0.is_contiguous():
                return
            rec(f"{d}.{kind}{new}", lambda s, e: getattr(e[i], kind)(*new))
        elif kind == "flatten":
            rec(f"{d}.flatten()", lambda s, e: e[i].flatten())
        elif kind == "expand":
            new = tuple(int(r.integers(1, 4)) if n == 1 and r.random() < 0.7 else
                        (-1 if r.random() < 0.3 else n) for n in shape)
            new = (2,) * int(r.integers(0, 2)) + new
            if new:
                rec(f"{d}.expand{new}", lambda s, e: e[i].expand(*new))
        elif kind == "chunk" and nd:
            c = int(r.integers(1, 4))
            rec(f"{d}.chunk({c},{ax})", lambda s, e: e[i].chunk(c, ax))
        elif kind == "split" and nd:
            if r.random() < 0.5:
                sz = int(r.integers(1, 4))
            else:
                n, sz = shape[ax], []
                while n > 0:
                    sz.append(int(r.integers(1, n + 1)))
                    n -= sz[-1]
            rec(f"{d}.split({sz},{ax})", lambda s, e: e[i].split(sz, ax))
        elif kind == "unbind" and nd:
            rec(f"{d}.unbind({ax})", lambda s, e: e[i].unbind(ax))
        elif kind == "narrow" and nd:
            n = shape[ax]
            st = int(r.integers(0, n + 1))
            ln = int(r.integers(0, n - st + 1))
            rec(f"{d}.narrow({ax},{st},{ln})", lambda s, e: e[i].narrow(ax, st, ln))
        elif kind == "select" and nd and shape[ax]:
            k = int(r.integers(-shape[ax], shape[ax]))
            rec(f"{d}.select({ax},{k})", lambda s, e: e[i].select(ax, k))
        elif kind == "adv" and nd and shape[0]:
            idx = r.integers(-shape[0], shape[0], int(r.integers(1, 5)))
            if r.random() < 0.5:
                rec(f"{d}[tensor {idx.tolist()}]", lambda s, e: e[i][s.const(idx)])
            else:
                lst = idx.tolist()
                rec(f"{d}[list {lst}]", lambda s, e: e[i][lst])
        elif kind == "detach":
            rec(f"{d}.detach()", lambda s, e: e[i].detach())
        elif kind == "contig":
            rec(f"{d}.contiguous()", lambda s, e: e[i].contiguous())
        elif kind == "diagonal" and nd >= 2:
            rec(f"{d}.diagonal()", lambda s, e: e[i].diagonal())

    def op_reduce(self):
        p = self.pick()
        if p is None:
            return
        i, d = p
        r = self.rng
        nd = self.env[i].ndim
        ax = int(r.integers(-nd, nd)) if nd else None
        kd = bool(r.random() < 0.4)
        names = ["sum", "sum_all", "amax", "mean"] if self.float else ["sum", "sum_all", "amax"]
        name = str(r.choice(names))
        if name == "amax" and (ax is None or self.env[i].shape[ax] == 0):
            return
        if name == "mean" and ax is None:
            name = "sum_all"

        def f(s, e):
            t = e[i]
            return t.sum() if name == "sum_all" else getattr(t, name)(ax, keepdim=kd)
        self.record(f"{d}.{name}({ax}, keepdim={kd})", f)

    def op_matmul(self):
        p = self.pick(lambda t: t.ndim in (1, 2, 3))
        if p is None:
            return
        i, d = p
        k = self.env[i].shape[-1]
        n = int(self.rng.integers(1, 4))
        j = self.leaf((k, n) if self.rng.random() < 0.8 else (k,))
        self.record(f"{d} @ {self.leaves[-1].name}", lambda s, e: e[i] @ e[j])

    def op_cat(self):
        p = self.pick(lambda t: t.ndim >= 1)
        if p is None:
            return
        i, d = p
        sh = tuple(self.env[i].shape)
        q = self.pick(lambda t: tuple(t.shape) == sh) or p
        j = q[0]
        f = "stack" if self.rng.random() < 0.4 else "cat"
        ax = int(self.rng.integers(0, len(sh)))
        self.record(f"{f}([{d}, {q[1]}], {ax})",
                    lambda s, e: getattr(s.lib, f)([e[i], e[j]], ax))

    def op_inplace(self):
        p = self.pick()
        if p is None:
            return
        i, d = p
        r = self.rng
        t0 = self.env[i]
        names = ["add_s", "mul_s", "add_t", "sub_t", "zero", "fill", "copy", "setitem",
                 "clamp", "nograd_add", "iadd", "setitem_t"]
        if self.float:
            names += ["tanh_", "exp_", "div_"]
        name = str(r.choice(names))
        shape = tuple(t0.shape)
        if any(st == 0 and n > 1 for st, n in zip(t0.stride(), t0.shape)):
            return          # (a write into an expanded view: refused by tracejit, see README)
        j = None
        if name in ("add_t", "sub_t", "copy", "iadd"):
            j, d2 = self.other_for(shape)
            if self.env[j].untyped_storage().data_ptr() == t0.untyped_storage().data_ptr():
                return      # torch refuses an operand overlapping the written tensor
        key = self.basic_key(shape) if name in ("setitem", "setitem_t") else None
        val = float(r.integers(-3, 4))
        if name == "setitem_t":
            try:
                sub = tuple(t0[key].shape)
            except (IndexError, RuntimeError, TypeError):
                return
            j, d2 = self.other_for(sub)

        def f(s, e):
            t = e[i]
            if name == "add_s":
                return t.add_(val)
            if name == "mul_s":
                return t.mul_(val)
            if name == "add_t":
                return t.add_(e[j])
            if name == "sub_t":
                return t.sub_(e[j])
            if name == "iadd":
                t += e[j]
                return t
            if name == "zero":
                return t.zero_()
            if name == "fill":
                return t.fill_(val)
            if name == "copy":
                return t.copy_(e[j])
            if name == "setitem":
                t[key] = val
                return t
            if name == "setitem_t":
                t[key] = e[j]
                return t
            if name == "clamp":
                return t.clamp_(-1, 1)
            if name == "tanh_":
                return t.tanh_()
            if name == "exp_":
                return t.clamp_(-3, 3).exp_()
            if name == "div_":
                return t.div_(2.0)
            with s.lib.no_grad():
                return t.add_(1.0)
        what = "" if j is None else self.pool_desc(j)
        self.record(f"{d}.{name}({what or (key if key is not None else val)!r})", f,
                    inplace=True)

    def pool_desc(self, k: int) -> str:
        for lf in self.leaves:
            if lf.slot == k:
                return lf.name
        for idx, d in self.pool:
            if idx == k:
                return d
        return f"env{k}"

    def op_ext(self):
        """An op of tests/fuzz_ops_ext.py's families (seeds >= EXT_SEED only)."""
        p = self.pick()
        if p is None:
            return
        i, d = p
        t0 = self.env[i]
        op = draw(self.rng, t0, self.float)
        if op is None:
            return
        j, d2 = (None, "")
        if op.other:
            j, d2 = self.other_for(tuple(t0.shape))
        if op.inplace:
            if any(st == 0 and n > 1 for st, n in zip(t0.stride(), t0.shape)):
                return      # (a write into an expanded view: refused by tracejit, see README)
            if j is not None and self.env[j].untyped_storage().data_ptr() == \
                    t0.untyped_storage().data_ptr():
                return      # torch refuses an operand overlapping the written tensor
        self.record(f"{d}.{op.desc}({d2})",
                    lambda s, e: op.fn(s.lib, s.F, s.const, e[i], None if j is None else e[j]),
                    inplace=op.inplace)

    def _generate(self) -> None:
        for _ in range(int(self.rng.integers(1, 4))):
            self.leaf()
        ops = [self.op_unary, self.op_binary, self.op_view, self.op_view, self.op_reduce,
               self.op_matmul, self.op_cat, self.op_inplace, self.op_inplace, self.op_scalar]
        w = np.array([3, 3, 4, 3, 1.5, 0.7, 0.7, 2, 1, 0.8 if self.float else 0])
        if self.seed >= EXT_SEED:           # (older seeds keep their programs)
            ops.append(self.op_ext)
            w = np.append(w, 7)
        for _ in range(self.n_ops):
            ops[self.rng.choice(len(ops), p=w / w.sum())]()

    # -- running -----------------------------------------------------------------------------
    def outputs(self) -> list[int]:
        """The slots a program returns: every op result, views included (read after the
        whole program ran, so they show the in-place ops that followed them)."""
        leaves = {lf.slot for lf in self.leaves}
        return [k for k, _ in self.pool if k not in leaves]

    def replay(self, side: Side, leaf_values: list) -> list:
        """Run the program on one side from its leaves' values; returns the environment."""
        env = []
        for _desc, fn, kind in self.steps:
            if kind == "leaf":
                env.append(leaf_values[fn])
                continue
            out = fn(side, env)
            if kind == "op":
                env.extend(list(out) if isinstance(out, (tuple, list)) else [out])
        return env

    def listing(self) -> str:
        return "\n  ".join(d for d, _, _ in self.steps)


def make_value(lf: Leaf, a, side: Side):
    """A leaf's value for one side (a new tensor each time: every run starts from scratch)."""
    if lf.role == "scalar":
        return float(a)
    a = np.asarray(a)
    if lf.layout in VIEW_LAYOUTS and a.ndim:
        return _view_value(lf.layout, a, side)
    if lf.layout == "strided" and a.ndim:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        arr = big[..., ::2]
    elif lf.layout == "transposed" and a.ndim >= 2:
        arr = np.asfortranarray(a)
    else:
        arr = a.copy()
    if side is THS:
        # (C order: tracejit's bases are contiguous whatever their array's layout, so
        # torch's contiguous() of one must not copy either)
        t = torch.tensor(np.array(arr, order="C"))
        if lf.role == "param":
            return torch.nn.Parameter(t)
        return t.requires_grad_(lf.grad)
    if lf.role == "np":
        return arr
    if lf.role == "param":
        return tj.nn.Parameter(tj.Tensor(arr))
    return tj.Tensor(arr, requires_grad=lf.grad)


def _view_value(layout: str, a: np.ndarray, side: Side):
    """A view of a new eager base, of a's shape (see Leaf): a's values for tview and sview,
    a broadcast of a's first column for bview."""
    if layout == "tview" and a.ndim >= 2:
        return side.const(np.ascontiguousarray(np.swapaxes(a, -1, -2))).transpose(-1, -2)
    if layout == "bview" and a.shape[-1] > 1:
        return side.const(a[..., :1].copy()).expand(*a.shape)
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return side.const(big)[..., ::2]
