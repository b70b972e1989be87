"""A randomized differential tester of eager tracejit against PyTorch: `run(seed)` builds one
random define-by-run program and runs it on both libraries side by side.

A program mixes views (slices with steps, flips, transposes, expand, unsqueeze, chunk/split,
narrow, select, advanced and boolean indexing), in-place ops on views and on their bases,
broadcasting adds, fused composites (softmax, log_softmax, layer_norm, gelu chains), matmul,
reductions, several dtypes (float32, float64, int64), sizes 0 and 1, non-contiguous leaves,
leaves used many times, retain_grad, hooks that keep or replace their argument, `.grad` read
between two backward calls, backward(retain_graph=True) twice and create_graph double
backward. Every op's value, every tensor still held at the end (views follow in-place ops on
their bases), every gradient, retained gradient and hook argument is compared with torch.

An op that raises on one side must raise on the other (torch's errors: in-place on a leaf
that requires grad or on a view of one, an in-place change to a value saved for backward,
found at backward). A mismatch raises `Mismatch` naming the seed and the program's steps."""
from __future__ import annotations

import contextlib
import warnings

import numpy as np

import tracejit as tj
import tracejit.nn.functional as tjF

import torch
import torch.nn.functional as thF

FLOATS = (np.float32, np.float64)
TOL = {np.dtype(np.float32): (1e-3, 2e-5), np.dtype(np.float64): (1e-9, 1e-11),
       np.dtype(np.int64): (0, 0), np.dtype(np.bool_): (0, 0)}


def random_basic_key(r: np.random.Generator, shape: tuple):
    """A random basic index (ints, slices with steps, None, Ellipsis) for a tensor of `shape`."""
    key = []
    nd = int(r.integers(0, len(shape) + 1))
    for n in shape[:nd]:
        c = r.random()
        if c < 0.3 and n > 0:
            key.append(int(r.integers(-n, n)))
        elif c < 0.4:
            key += [None, slice(None)]
        else:
            a = int(r.integers(-n - 1, n + 2)) if r.random() < 0.6 else None
            b = int(r.integers(-n - 1, n + 2)) if r.random() < 0.6 else None
            st = int(r.choice([1, 1, 2, 3])) if r.random() < 0.5 else None
            key.append(slice(a, b, st))
    if r.random() < 0.1:
        key.insert(int(r.integers(len(key) + 1)), Ellipsis)
    if len(key) == 1 and r.random() < 0.5:
        return key[0]
    return tuple(key)


class Mismatch(AssertionError):
    pass


class Inconclusive(Exception):
    """torch refused something tracejit allows by design (an in-place op on a view from a
    function returning several views): the program stops there."""


class TorchStricter(Exception):
    """torch raised a saved-tensor version error that tracejit did not: tracejit saved a
    snapshot where torch saved the tensor itself. The program is run again with torch saving
    copies (saved_tensors_hooks), whose gradients tracejit's must then equal."""


_MULTI_VIEW = ("is a view and its base or another view of its base has been modified",
               "This view is the output of a function that returns multiple views")


# what tracejit allows by design where torch refuses (README, "Status and known gaps"): a
# matmul of two dtypes promotes, the mean of integers or bools is float32
_LENIENT = ("expected m1 and m2 to have the same dtype", "mean(): could not infer output dtype")


def _torch_context(clone_saved: bool):
    if not clone_saved:
        return contextlib.nullcontext()
    return torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t)


class _Side:
    def __init__(self, lib, F) -> None:
        self.lib, self.F = lib, F

    def tensor(self, a: np.ndarray, grad: bool, strided: bool):
        if self.lib is torch:
            return torch.tensor(a, requires_grad=grad)
        if strided and a.ndim:
            big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
            big[..., ::2] = a
            return tj.Tensor(big[..., ::2], requires_grad=grad)
        return tj.tensor(a.copy(), requires_grad=grad)

    def index(self, idx: np.ndarray):
        return torch.tensor(idx) if self.lib is torch else tj.tensor(idx)


TJ, TH = _Side(tj, tjF), _Side(torch, thF)


def npv(t) -> np.ndarray:
    if isinstance(t, np.ndarray):
        return t
    if isinstance(t, torch.Tensor):
        return t.detach().numpy(force=True)         # (force: a double backward's ZeroTensor)
    return np.asarray(t.detach().numpy())


def close(a, b, what: str) -> None:
    a, b = npv(a), npv(b)
    if a.shape != b.shape:
        raise Mismatch(f"{what}: shape {a.shape} vs torch {b.shape}")
    if a.dtype != b.dtype:
        raise Mismatch(f"{what}: dtype {a.dtype} vs torch {b.dtype}")
    rtol, atol = TOL.get(a.dtype, (1e-2, 1e-3))
    fin = np.abs(b[np.isfinite(b)]) if b.dtype.kind == "f" else b
    scale = max(1.0, float(fin.max())) if fin.size and b.dtype.kind == "f" else 1.0
    if b.dtype.kind == "f":
        ok = np.isclose(a, b, rtol=rtol, atol=atol * scale, equal_nan=True)
    else:
        ok = a == b
    if not np.all(ok):
        bad = np.argwhere(~ok)[:3].tolist()
        raise Mismatch(f"{what}: values differ at {bad}: {a.ravel()[:6]} vs torch "
                       f"{b.ravel()[:6]}")


UNARY_FLOAT = ["exp", "tanh", "sigmoid", "relu", "neg", "abs", "sin", "square", "sqrt", "log",
               "gelu", "softmax", "log_softmax", "layer_norm", "scale", "rsub", "pow", "clone",
               "silu", "gelu_tanh", "div_s"]


def unary_float(s: "_Side", t, name: str, dim: int | None):
    """The unary op `name` of a float program on side s (dim: softmax's)."""
    F = s.F
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
    }[name]()


class Program:
    """One random program: a pool of (tracejit, torch) pairs grown op by op."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        r = self.rng
        self.dtype = [np.float32, np.float64, np.int64][r.choice(3, p=[0.55, 0.3, 0.15])]
        self.float = self.dtype in FLOATS
        self.pool: list[tuple] = []          # (tj, torch, description)
        self.leaves: list[tuple] = []
        self.steps: list[str] = []
        self.hooks: list[tuple] = []         # (tj record list, torch record list, desc)
        self.retained: list[tuple] = []
        self.clone_saved = False             # torch saves copies (see TorchStricter)

    # -- inputs ------------------------------------------------------------------------------
    def shape(self) -> tuple:
        r = self.rng
        nd = int(r.choice(4, p=[0.05, 0.2, 0.5, 0.25]))
        return tuple(int(r.choice([0, 1, 2, 3, 4, 5], p=[.04, .16, .25, .25, .15, .15]))
                     for _ in range(nd))

    def array(self, shape) -> np.ndarray:
        r = self.rng
        if self.float:
            return r.standard_normal(shape).astype(self.dtype)
        return r.integers(-4, 5, shape).astype(self.dtype)

    def leaf(self, shape=None, desc="leaf"):
        shape = self.shape() if shape is None else shape
        a = self.array(shape)
        grad = self.float and self.rng.random() < 0.85
        strided = self.rng.random() < 0.3
        pair = (TJ.tensor(a, grad, strided), TH.tensor(a, grad, strided))
        self.leaves.append(pair + (f"{desc}{len(self.leaves)}{list(shape)}",))
        self.pool.append(self.leaves[-1])
        self.steps.append(f"{self.leaves[-1][2]} grad={grad} strided={strided}")
        return pair

    def pick(self, pred=None):
        cands = [p for p in self.pool if pred is None or pred(p[1])]
        if not cands:
            return None
        return cands[int(self.rng.integers(len(cands)))]

    # -- running one op on both sides --------------------------------------------------------
    def apply(self, desc: str, fn, add: bool = True, leaf_quirk: bool = False):
        """fn(side) on both sides; both raise or neither; results compared and pooled.
        leaf_quirk: torch's 'a leaf Variable that requires grad' error is inconclusive (the
        written tensor's base was a leaf without grad that an earlier in-place op gave a
        history; torch still reads the view's old leaf status)."""
        res, errs = [], []
        for side in (TJ, TH):
            try:
                with warnings.catch_warnings(), _torch_context(self.clone_saved and side is TH):
                    warnings.simplefilter("ignore")
                    res.append(fn(side))
                errs.append(None)
            except (RuntimeError, ValueError, TypeError, IndexError) as e:
                res.append(None)
                errs.append(e)
        self.steps.append(desc + ("" if errs == [None, None] else f"  -> raised {errs}"))
        if errs[0] is None and errs[1] is not None and any(m in str(errs[1]) for m in _MULTI_VIEW
                                                            + _LENIENT):
            raise Inconclusive(desc)
        if errs[0] is None and errs[1] is not None and leaf_quirk and \
                "a leaf Variable that requires grad" in str(errs[1]):
            raise Inconclusive(desc)
        if (errs[0] is None) != (errs[1] is None):
            raise Mismatch(f"{desc}: tracejit {'raised ' + repr(errs[0]) if errs[0] else 'ran'}"
                           f", torch {'raised ' + repr(errs[1]) if errs[1] else 'ran'}")
        if errs[0] is not None:
            return None
        a, b = res
        if isinstance(b, (tuple, list)):
            if len(a) != len(b):
                raise Mismatch(f"{desc}: {len(a)} results vs torch {len(b)}")
            out = []
            for i, (x, y) in enumerate(zip(a, b)):
                close(x, y, f"{desc}[{i}]")
                out.append((x, y, f"{desc}[{i}]"))
            if add:
                self.pool.extend(out)
            return out
        if isinstance(b, torch.Tensor):
            close(a, b, desc)
            self.check_requires_grad(a, b, desc)
            if add:
                self.pool.append((a, b, desc))
            return (a, b, desc)
        return None

    def check_requires_grad(self, a, b, desc) -> None:
        if bool(a.requires_grad) != bool(b.requires_grad):
            raise Mismatch(f"{desc}: requires_grad {a.requires_grad} vs torch {b.requires_grad}")

    # -- op kinds ----------------------------------------------------------------------------
    def op_unary(self):
        p = self.pick()
        if p is None:
            return
        x, y, d = p
        r = self.rng
        if not self.float:
            name = r.choice(["neg", "abs", "square", "mul2", "clone"])
            f = {"neg": lambda t: -t, "abs": lambda t: t.abs(), "square": lambda t: t * t,
                 "mul2": lambda t: t * 2 + 1, "clone": lambda t: t.clone()}[name]
            self.apply(f"{name}({d})", lambda s: f(x if s is TJ else y))
            return
        name = str(r.choice(UNARY_FLOAT))
        dim = int(r.integers(-x.ndim, x.ndim)) if x.ndim else None
        if name in ("softmax", "log_softmax", "layer_norm") and x.ndim == 0:
            return
        self.apply(f"{name}({d}{'' if dim is None else ', dim=%d' % dim})",
                   lambda s: unary_float(s, x if s is TJ else y, name, dim))

    def other_for(self, shape: tuple):
        """A second operand for a broadcasting binary op with `shape`: a pooled tensor of a
        compatible shape, or a new leaf of a broadcastable one."""
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
        x, y = self.leaf(s, "b")
        return x, y, self.leaves[-1][2]

    def op_binary(self):
        p = self.pick()
        if p is None:
            return
        x, y, d = p
        x2, y2, d2 = self.other_for(tuple(y.shape))
        r = self.rng
        names = ["add", "sub", "mul", "radd", "max", "min", "where"]
        if self.float:
            names += ["div", "add_alpha"]
        name = str(r.choice(names))
        if r.random() < 0.5:                 # operand order
            x, y, d, x2, y2, d2 = x2, y2, d2, x, y, d

        def f(s, a, b):
            lib = s.lib
            return {
                "add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b,
                "radd": lambda: b + a, "max": lambda: lib.maximum(a, b),
                "min": lambda: lib.minimum(a, b), "where": lambda: lib.where(a > b, a, b * 2),
                "div": lambda: a / (b.abs() + 0.5), "add_alpha": lambda: a.add(b, alpha=2),
            }[name]()
        self.apply(f"{name}({d}, {d2})", lambda s: f(s, *((x, x2) if s is TJ else (y, y2))))

    def basic_key(self, shape: tuple):
        return random_basic_key(self.rng, shape)

    def op_view(self):
        p = self.pick()
        if p is None:
            return
        x, y, d = p
        r = self.rng
        shape = tuple(y.shape)
        nd = len(shape)
        kinds = ["index", "index", "index", "unsqueeze", "flip", "reshape", "expand",
                 "chunk", "split", "narrow", "select", "adv", "mask", "unbind", "view",
                 "detach", "contig", "diagonal", "flatten"]
        if nd >= 2:
            kinds += ["transpose", "T", "mT", "permute", "t"] * 2
        if nd == 1:
            kinds += ["t"]
        if 1 in shape:
            kinds += ["squeeze"]
        kind = str(r.choice(kinds))
        ax = int(r.integers(-nd, nd)) if nd else 0
        if kind == "index":
            key = self.basic_key(shape)
            self.apply(f"{d}[{key!r}]", lambda s: (x if s is TJ else y)[key])
        elif kind == "unsqueeze":
            a = int(r.integers(-nd - 1, nd + 1))
            self.apply(f"{d}.unsqueeze({a})", lambda s: (x if s is TJ else y).unsqueeze(a))
        elif kind == "squeeze":
            a = shape.index(1)
            self.apply(f"{d}.squeeze({a})", lambda s: (x if s is TJ else y).squeeze(a))
        elif kind == "flip" and nd:
            self.apply(f"{d}.flip({ax})", lambda s: (x if s is TJ else y).flip(ax))
        elif kind == "transpose":
            b = int(r.integers(-nd, nd))
            self.apply(f"{d}.transpose({ax},{b})",
                       lambda s: (x if s is TJ else y).transpose(ax, b))
        elif kind == "T" and nd == 2:
            self.apply(f"{d}.T", lambda s: (x if s is TJ else y).T)
        elif kind == "mT":
            self.apply(f"{d}.mT", lambda s: (x if s is TJ else y).mT)
        elif kind == "t":
            self.apply(f"{d}.t()", lambda s: (x if s is TJ else y).t())
        elif kind == "permute":
            perm = tuple(int(i) for i in r.permutation(nd))
            self.apply(f"{d}.permute{perm}", lambda s: (x if s is TJ else y).permute(*perm))
        elif kind in ("reshape", "view"):
            new = _factor(shape, r)
            if kind == "view" and not y.is_contiguous():
                return  # known: which strided views torch allows differs in corner cases
            self.apply(f"{d}.{kind}{new}", lambda s: getattr(x if s is TJ else y, kind)(*new))
        elif kind == "flatten":
            self.apply(f"{d}.flatten()", lambda s: (x if s is TJ else y).flatten())
        elif kind == "expand":
            new = tuple(int(r.integers(1, 4)) if n == 1 and r.random() < 0.7 else
                        (-1 if r.random() < 0.3 else n) for n in shape)
            new = (2,) * int(r.integers(0, 2)) + new
            if not new:
                return
            self.apply(f"{d}.expand{new}", lambda s: (x if s is TJ else y).expand(*new))
        elif kind == "chunk" and nd:
            c = int(r.integers(1, 4))
            self.apply(f"{d}.chunk({c},{ax})", lambda s: (x if s is TJ else y).chunk(c, ax))
        elif kind == "split" and nd:
            if r.random() < 0.5:
                sz = int(r.integers(1, 4))
            else:
                n, sz = shape[ax], []
                while n > 0:
                    sz.append(int(r.integers(1, n + 1)))
                    n -= sz[-1]
            self.apply(f"{d}.split({sz},{ax})", lambda s: (x if s is TJ else y).split(sz, ax))
        elif kind == "unbind" and nd:
            self.apply(f"{d}.unbind({ax})", lambda s: (x if s is TJ else y).unbind(ax))
        elif kind == "narrow" and nd:
            n = shape[ax]
            st = int(r.integers(0, n + 1))
            ln = int(r.integers(0, n - st + 1))
            self.apply(f"{d}.narrow({ax},{st},{ln})",
                       lambda s: (x if s is TJ else y).narrow(ax, st, ln))
        elif kind == "select" and nd and shape[ax]:
            i = int(r.integers(-shape[ax], shape[ax]))
            self.apply(f"{d}.select({ax},{i})", lambda s: (x if s is TJ else y).select(ax, i))
        elif kind == "adv" and nd and shape[0]:
            idx = r.integers(-shape[0], shape[0], int(r.integers(0, 5)))   # (0: x[[]])
            if r.random() < 0.5:
                self.apply(f"{d}[{idx.tolist()}]", lambda s: (x if s is TJ else y)[s.index(idx)])
            else:
                lst = idx.tolist()
                self.apply(f"{d}[:, list]" if nd > 1 and shape[1] else f"{d}[list {lst}]",
                           lambda s: (x if s is TJ else y)[lst])
        elif kind == "mask":        # (a 0-d tensor too: shape (0,) or (1,))
            self.apply(f"{d}[{d} > 0]", lambda s: (x if s is TJ else y)[(x if s is TJ else y) > 0])
        elif kind == "detach":
            self.apply(f"{d}.detach()", lambda s: (x if s is TJ else y).detach())
        elif kind == "contig":
            self.apply(f"{d}.contiguous()", lambda s: (x if s is TJ else y).contiguous())
        elif kind == "diagonal" and nd >= 2:
            self.apply(f"{d}.diagonal()", lambda s: (x if s is TJ else y).diagonal())

    def op_reduce(self):
        p = self.pick()
        if p is None:
            return
        x, y, d = p
        r = self.rng
        nd = y.ndim
        ax = int(r.integers(-nd, nd)) if nd else None
        kd = bool(r.random() < 0.4)
        names = ["sum", "sum_all", "amax", "mean"] if self.float else ["sum", "sum_all", "amax"]
        name = str(r.choice(names))
        if name in ("amax",) and (ax is None or y.shape[ax] == 0):
            return
        if name == "mean" and ax is None:
            name = "sum_all"

        def f(t):
            if name == "sum_all":
                return t.sum()
            return getattr(t, name)(ax, keepdim=kd) if name != "amax" else t.amax(ax, keepdim=kd)
        self.apply(f"{d}.{name}({ax}, keepdim={kd})", lambda s: f(x if s is TJ else y))

    def op_matmul(self):
        p = self.pick(lambda t: t.ndim in (1, 2, 3))
        if p is None:
            return
        x, y, d = p
        k = y.shape[-1]
        n = int(self.rng.integers(1, 4))
        x2, y2 = self.leaf((k, n) if self.rng.random() < 0.8 else (k,), "w")
        d2 = self.leaves[-1][2]
        self.apply(f"{d} @ {d2}", lambda s: (x @ x2) if s is TJ else (y @ y2))

    def op_cat(self):
        p = self.pick(lambda t: t.ndim >= 1)
        if p is None:
            return
        x, y, d = p
        q = self.pick(lambda t: tuple(t.shape) == tuple(y.shape)) or p
        stack = self.rng.random() < 0.4
        ax = int(self.rng.integers(0, y.ndim))
        f = "stack" if stack else "cat"
        self.apply(f"{f}([{d}, {q[2]}], {ax})",
                   lambda s: getattr(s.lib, f)([x, q[0]] if s is TJ else [y, q[1]], ax))

    def op_inplace(self):
        p = self.pick()
        if p is None:
            return
        x, y, d = p
        r = self.rng
        names = ["add_s", "mul_s", "add_t", "sub_t", "mul_t", "zero", "fill", "copy",
                 "setitem", "clamp", "nograd_add", "iadd"]
        if self.float:
            names += ["tanh_", "exp_", "sigmoid_div"]
        name = str(r.choice(names))
        shape = tuple(y.shape)
        if any(st == 0 and n > 1 for st, n in zip(y.stride(), y.shape)):
            return      # known: tracejit refuses any write to an expanded view, torch only
            #             writes that reach one element twice
        if name in ("add_t", "sub_t", "mul_t", "copy", "iadd"):
            x2, y2, d2 = self.other_for(shape)
            if y2.untyped_storage().data_ptr() == y.untyped_storage().data_ptr():
                return  # torch refuses an operand overlapping the written tensor
        else:
            x2 = y2 = None
            d2 = ""
        key = self.basic_key(shape) if name == "setitem" else None
        val = float(r.integers(-3, 4))

        def f(s, t, o):
            if name == "add_s":
                return t.add_(val)
            if name == "mul_s":
                return t.mul_(val)
            if name == "add_t":
                return t.add_(o)
            if name == "sub_t":
                return t.sub_(o)
            if name == "mul_t":         # (only o requiring grad: t is saved for o's gradient)
                return t.mul_(o)
            if name == "iadd":
                t += o
                return t
            if name == "zero":
                return t.zero_()
            if name == "fill":
                return t.fill_(val)
            if name == "copy":
                return t.copy_(o)
            if name == "setitem":
                t[key] = val
                return t
            if name == "clamp":
                return t.clamp_(-1, 1)
            if name == "tanh_":
                return t.tanh_()
            if name == "exp_":
                return t.clamp_(-3, 3).exp_()
            if name == "sigmoid_div":
                return t.div_(2.0)
            with s.lib.no_grad():
                return t.add_(1.0)
        rec = getattr(x, "_view", None)
        root = getattr(rec, "root", x)
        quirk = not (root.is_leaf and root.requires_grad) and not (x.is_leaf and x.requires_grad)
        res = self.apply(f"{d}.{name}({d2 or key or val})",
                         lambda s: f(s, x, x2) if s is TJ else f(s, y, y2), add=False,
                         leaf_quirk=quirk)
        if res is not None and res[0] is not x:
            raise Mismatch(f"{name} on {d} returned a new tensor, not its input")

    def op_hook(self):
        p = self.pick(lambda t: t.requires_grad)
        if p is None:
            return
        x, y, d = p
        mode = str(self.rng.choice(["keep", "double", "retain", "keep", "clone_mul"]))
        if mode == "retain":
            if x.grad_fn is None:
                return
            self.apply(f"{d}.retain_grad()", lambda s: (x if s is TJ else y).retain_grad(),
                       add=False)
            self.retained.append(p)
            return
        if y._is_view():
            return      # (torch 2.13 can crash registering a hook on a view rebased in place)
        recs = ([], [])

        def hook_for(rec):
            def h(g):
                if g is None:           # (torch passes None where no gradient flowed)
                    return None
                rec.append((g, npv(g).copy()))
                if mode == "double":
                    return g * 2
                if mode == "clone_mul":
                    return g.clone() * 0.5
                return None
            return h
        self.apply(f"{d}.register_hook({mode})",
                   lambda s: (x if s is TJ else y).register_hook(hook_for(recs[s is TH])),
                   add=False)
        self.hooks.append((recs[0], recs[1], f"hook({mode}) on {d}"))

    # -- the program -------------------------------------------------------------------------
    def forward(self, n_ops: int) -> None:
        for _ in range(int(self.rng.integers(1, 4))):
            self.leaf()
        ops = [self.op_unary, self.op_binary, self.op_view, self.op_view, self.op_reduce,
               self.op_matmul, self.op_cat, self.op_inplace, self.op_inplace, self.op_hook]
        w = np.array([3, 3, 4, 3, 1.5, 0.7, 0.7, 2, 1, 1.5 if self.float else 0])
        for _ in range(n_ops):
            ops[self.rng.choice(len(ops), p=w / w.sum())]()

    def check_pool(self, when: str) -> None:
        for x, y, d in self.pool:
            close(x, y, f"{d} ({when})")

    def backward(self) -> None:
        outs = [p for p in self.pool if p[1].requires_grad]
        if not outs:
            return
        r = self.rng
        chosen = [outs[i] for i in sorted(set(r.integers(0, len(outs), 3).tolist()))]
        ws = [r.standard_normal(tuple(p[1].shape)).astype(self.dtype) for p in chosen]
        mode = str(r.choice(["backward", "twice", "grad", "double"], p=[.35, .3, .15, .2]))
        if mode == "double" and (self.retained or any("keep" not in d for _, _, d in self.hooks)):
            # known: a fused composite's double backward recomputes it from its inputs, where
            # torch's formulas read its saved output: a hook that changes the output's
            # gradient, or a retained .grad, sees the second-order terms differently
            mode = "grad"
        self.steps.append(f"loss over {[p[2] for p in chosen]}; {mode}")

        def loss(side):
            i = 0 if side is TJ else 1
            total = None
            for p, w in zip(chosen, ws):
                term = (p[i] * side.lib.tensor(w)).sum()
                total = term if total is None else total + term
            return total
        leaves = [p for p in self.leaves if p[1].requires_grad]

        def both(desc, fn):
            errs = []
            for side in (TJ, TH):
                try:
                    with warnings.catch_warnings(), \
                            _torch_context(self.clone_saved and side is TH):
                        warnings.simplefilter("ignore")
                        fn(side)
                    errs.append(None)
                except RuntimeError as e:
                    errs.append(e)
            self.steps.append(desc + ("" if errs == [None, None] else f" -> raised {errs}"))
            if errs[0] is None and errs[1] is not None:
                if any(m in str(errs[1]) for m in _MULTI_VIEW):
                    raise Inconclusive(desc)
                if "modified by an inplace operation" in str(errs[1]):
                    raise TorchStricter(desc)
            if errs[1] is None and errs[0] is not None and "create_graph=True" in desc and \
                    "modified by an inplace operation" in str(errs[0]):
                # known: a fused composite's double backward recomputes it, so it checks
                # every input's version, also those torch's formula does not read (flip)
                raise Inconclusive(desc)
            if (errs[0] is None) != (errs[1] is None):
                raise Mismatch(f"{desc}: tracejit {errs[0]!r}, torch {errs[1]!r}")
            return errs[0] is None
        if mode in ("backward", "twice"):
            ls = {}
            if not both("loss", lambda s: ls.__setitem__(s is TJ, loss(s))):
                return
            retain = mode == "twice"
            if not both("backward", lambda s: ls[s is TJ].backward(retain_graph=retain)):
                return
            self.check_grads("after backward")
            if mode == "twice":
                held = [(p[0].grad, p[1].grad, p[2]) for p in leaves]
                if not both("backward again", lambda s: ls[s is TJ].backward()):
                    return
                self.check_grads("after the second backward")
                for a, b, d in held:
                    if (a is None) != (b is None):
                        raise Mismatch(f"{d}: held .grad None-ness differs")
                    if a is not None:
                        close(a, b, f"{d}: .grad held from the first backward")
        else:
            got = {}
            create = mode == "double"

            def g(side):
                i = 0 if side is TJ else 1
                got[i] = side.lib.autograd.grad(loss(side), [p[i] for p in leaves],
                                                create_graph=create, allow_unused=True)
            if not leaves or not both(f"autograd.grad(create_graph={create})", g):
                return
            for k, p in enumerate(leaves):
                a, b = got[0][k], got[1][k]
                if (a is None) != (b is None):
                    if not _zeros(a if b is None else b):
                        raise Mismatch(f"grad of {p[2]}: {a is None} vs torch {b is None}")
                elif a is not None:
                    close(a, b, f"autograd.grad of {p[2]}")
            if create:
                pairs = [(got[0][k], got[1][k]) for k in range(len(leaves))
                         if got[1][k] is not None and got[1][k].requires_grad]
                if not pairs:
                    return
                ws2 = [r.standard_normal(tuple(b.shape)).astype(self.dtype) for _, b in pairs]

                def second(side):
                    i = 0 if side is TJ else 1
                    tot = sum((q[i] * q[i] * side.lib.tensor(w)).sum() for q, w in zip(pairs, ws2))
                    if side is TJ and not tot.requires_grad:
                        return      # a constant gradient: torch's must add nothing (checked)
                    tot.backward()
                if both("double backward", second):
                    self.check_grads("after double backward")
        self.check_hooks()
        self.check_pool("at the end")

    def check_grads(self, when: str) -> None:
        for a, b, d in self.leaves:
            ga, gb = a.grad, b.grad
            if (ga is None) != (gb is None) and not _zeros(ga if gb is None else gb):
                raise Mismatch(f"{d}.grad {when}: {ga is None} vs torch {gb is None}")
            if ga is not None:
                close(ga, gb, f"{d}.grad {when}")
        for a, b, d in self.retained:
            ga, gb = a.grad, b.grad
            if (ga is None) != (gb is None):
                raise Mismatch(f"retained {d}.grad {when}: {ga is None} vs torch {gb is None}")
            if ga is not None:
                close(ga, gb, f"retained {d}.grad {when}")

    def check_hooks(self) -> None:
        for ra, rb, d in self.hooks:
            # torch passes an explicit zero gradient where an overwritten value's history
            # (copy_, zero_) ends; tracejit passes none: calls with zeros are not compared
            ra = [c for c in ra if np.any(c[1])]
            rb = [c for c in rb if np.any(c[1])]
            if len(ra) != len(rb):
                raise Mismatch(f"{d}: called {len(ra)} times vs torch {len(rb)}")
            for k, ((ga, va), (gb, vb)) in enumerate(zip(ra, rb)):
                close(va, vb, f"{d} call {k}: its argument")
                # a kept argument that changed later: torch's must have changed alike (torch
                # itself sometimes hands a hook a buffer it accumulates into afterwards)
                now = npv(ga)
                if now.shape != va.shape or not np.array_equal(now, va, equal_nan=True):
                    close(ga, gb, f"{d} call {k}: its argument kept until the end changed")


def _zeros(t) -> bool:
    """A gradient of zeros, which torch sometimes gives where tracejit gives None (or the
    reverse: both mean no gradient reached the leaf)."""
    return not np.any(npv(t))


def _broadcasts(a: tuple, b: tuple) -> bool:
    if len(a) > len(b):
        return False
    return all(x == y or x == 1 for x, y in zip(a[::-1], b[::-1]))


def _factor(shape: tuple, r) -> tuple:
    n = int(np.prod(shape))
    if n == 0 or r.random() < 0.2:
        return (-1,) if r.random() < 0.5 else (n,)
    out = []
    m = n
    while m > 1 and len(out) < 3:
        divs = [k for k in range(1, m + 1) if m % k == 0]
        k = int(r.choice(divs))
        out.append(k)
        m //= k
    out.append(m)
    if r.random() < 0.3:
        out[int(r.integers(len(out)))] = -1
    return tuple(out)


def run(seed: int, n_ops: int | None = None, clone_saved: bool = False,
        program: type | None = None) -> str:
    """One random program (from `seed`) on tracejit and torch; raises Mismatch on a difference.
    Returns "ok", "inconclusive" (torch refused what tracejit allows) or "snapshot" (tracejit
    passed where torch's saved tensors had changed, and matched torch saving copies).
    `program`: a Program subclass with more op kinds (eager_fuzz_more.py)."""
    prog = (program or Program)(seed)
    prog.clone_saved = clone_saved
    n = int(prog.rng.integers(3, 16)) if n_ops is None else n_ops
    try:
        prog.forward(n)
        prog.check_pool("after the forward")
        prog.backward()
        return "snapshot" if clone_saved else "ok"
    except Inconclusive:
        return "inconclusive"
    except TorchStricter:
        if clone_saved:
            raise
        return run(seed, n_ops, clone_saved=True, program=program)
    except Mismatch as e:
        raise Mismatch(f"seed {seed}: {e}\nprogram ({prog.dtype.__name__}):\n  " +
                       "\n  ".join(prog.steps)) from None
