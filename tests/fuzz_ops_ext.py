"""More op families for both random-program fuzzers (tests/eager_fuzz_ext.py and, for seeds
>= EXT_SEED, tests/compiled_fuzz_gen.py): reductions over dim tuples (sum, mean, amax, amin,
prod, var, std, logsumexp, norm, any, all, count_nonzero, argmax/argmin), elementwise math
(floor/ceil/round/trunc/sign/frac, lerp, addcmul/addcdiv, hypot, tensor powers, fmod and
remainder, logaddexp, xlogy, clamp with tensor bounds, logit, heaviside, nan_to_num), integer
and bool arithmetic and casts (floor division and remainder with negative operands, true
division of integers, int32 with int64 and float scalars, bool sums and cumsums, bitwise ops),
shape ops (movedim, unflatten, roll, repeat, tile, tril/triu, cumprod, logcumsumexp, diff,
index_select, take_along_dim, masked_select, repeat_interleave, unfold, rot90, tensor_split,
squeeze of a dim tuple, flips read with steps), in-place ops on views (masked_fill_, index_add_,
clamp_ with a tensor bound, broadcast mul_/copy_/addcmul_/lerp_, pow_, floor_, writes through
an index tensor or a mask, fill_ of a diagonal) and nn.functional ops (normalize, pad modes,
activations, losses with each reduction, rms_norm, group_norm, pooling, conv1d, linear,
embedding).

`draw(rng, t, is_float)` picks one op for the torch tensor `t` (its shape and dtype drive the
choice) and returns an `Op`: `fn(lib, F, mk, x, o)` runs it on one library (`mk(array)` makes
a constant tensor of that library, `o` is a second operand broadcastable to x's shape when
`other` is set), `inplace` says it changes x. All random choices are made by `draw`, so the
same op replays on both sides."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

EXT_SEED = 90000


@dataclass
class Op:
    desc: str
    fn: Callable
    other: bool = False          # needs a second operand broadcastable to x
    inplace: bool = False


def _dims(rng, nd: int) -> tuple:
    """A random non-empty tuple of distinct dims, some spelled negative."""
    k = int(rng.integers(1, nd + 1))
    dims = rng.permutation(nd)[:k]
    return tuple(int(d) - nd if rng.random() < 0.4 else int(d) for d in dims)


def torch_bool():
    import torch
    return torch.bool


def _float(t) -> bool:
    return t.dtype.is_floating_point


def reduce_tuple(rng, t, is_float: bool) -> Op | None:
    nd = t.ndim
    names = ["sum", "amax", "amin", "prod", "any", "all", "count_nonzero", "argmax", "argmin"]
    if _float(t):
        names += ["mean", "var", "std", "logsumexp", "norm", "mean", "var"]
    name = str(rng.choice(names))
    kd = bool(rng.random() < 0.4)
    if name in ("argmax", "argmin") and t.dtype is torch_bool():
        return None          # (torch has no bool kernel; tracejit's answer is well defined)
    if nd == 0:
        if name == "logsumexp":
            return None     # (torch requires its dim; tracejit's default reduces all)
        return Op(f"{name}()", lambda L, F, mk, x, o: getattr(x, name)())
    if name in ("argmax", "argmin"):
        d = int(rng.integers(-nd, nd)) if rng.random() < 0.8 else None
        return Op(f"{name}({d}, keepdim={kd})",
                  lambda L, F, mk, x, o: getattr(x, name)(d, keepdim=kd))
    dims = _dims(rng, nd)
    if name in ("prod", "any", "all") and len(dims) > 1:
        dims = dims[:1]
    dd = dims[0] if name in ("prod",) else dims
    if name == "count_nonzero":
        return Op(f"count_nonzero({dims})", lambda L, F, mk, x, o: x.count_nonzero(dims))
    if name in ("var", "std"):
        corr = int(rng.choice([0, 1]))
        return Op(f"{name}({dims}, correction={corr}, keepdim={kd})",
                  lambda L, F, mk, x, o: getattr(x, name)(dims, correction=corr, keepdim=kd))
    if name == "norm":
        p = float(rng.choice([1.0, 2.0, 3.0, np.inf]))
        return Op(f"norm(p={p}, dim={dims}, keepdim={kd})",
                  lambda L, F, mk, x, o: x.norm(p=p, dim=dims, keepdim=kd))
    if name in ("any", "all"):
        return Op(f"{name}({dims[0]}, keepdim={kd})",
                  lambda L, F, mk, x, o: getattr(x, name)(dims[0], keepdim=kd))
    return Op(f"{name}({dd}, keepdim={kd})",
              lambda L, F, mk, x, o: getattr(x, name)(dd, keepdim=kd))


_MATH1 = {
    "floor": lambda L, F, x: x.floor(), "ceil": lambda L, F, x: x.ceil(),
    "round": lambda L, F, x: x.round(), "round1": lambda L, F, x: x.round(decimals=1),
    "trunc": lambda L, F, x: x.trunc(), "sign": lambda L, F, x: x.sign(),
    "frac": lambda L, F, x: x.frac(), "rsqrt": lambda L, F, x: (x.abs() + 0.5).rsqrt(),
    "expm1": lambda L, F, x: x.clamp(-3, 3).expm1(), "log1p": lambda L, F, x: x.abs().log1p(),
    "erf": lambda L, F, x: x.erf(), "fmod": lambda L, F, x: L.fmod(x, 0.7),
    "rem": lambda L, F, x: L.remainder(x, -0.7), "logit": lambda L, F, x: x.sigmoid().logit(),
    "nan_to_num": lambda L, F, x: (x / (x - x)).nan_to_num(posinf=2.0, neginf=-2.0),
    "clamp_min": lambda L, F, x: x.clamp_min(0.25), "where_s": lambda L, F, x: L.where(x > 0, x, 0.5),
    "mod_s": lambda L, F, x: x % 0.6, "pow_s": lambda L, F, x: x.abs() ** 1.5,
    "rpow": lambda L, F, x: 2.0 ** x.clamp(-3, 3), "isfinite": lambda L, F, x: (1 / x).isfinite(),
}
_MATH2 = {
    "lerp": lambda L, F, x, o: x.lerp(o, 0.3), "addcmul": lambda L, F, x, o: x.addcmul(o, o, value=0.5),
    "addcdiv": lambda L, F, x, o: x.addcdiv(o, o.abs() + 1, value=2),
    "hypot": lambda L, F, x, o: L.hypot(x, o), "pow_t": lambda L, F, x, o: (x.abs() + 0.5) ** o,
    "logaddexp": lambda L, F, x, o: L.logaddexp(x, o), "xlogy": lambda L, F, x, o: L.xlogy(x, o.abs()),
    "clamp_t": lambda L, F, x, o: x.clamp(min=o), "clamp_tmax": lambda L, F, x, o: x.clamp(max=o),
    # (detached: torch marks heaviside's result as needing grad but has no derivative for it)
    "heaviside": lambda L, F, x, o: x.detach().heaviside(o.detach()), "maximum_nan": lambda L, F, x, o: L.maximum(x, o / (o - o)),
    "fmod_t": lambda L, F, x, o: L.fmod(x, o.abs() + 0.5), "mod_t": lambda L, F, x, o: x % (o - 2.5),
}


def math(rng, t, is_float: bool) -> Op | None:
    if not _float(t):
        return None
    if rng.random() < 0.55:
        name = str(rng.choice(sorted(_MATH1)))
        g = _MATH1[name]
        return Op(f"{name}", lambda L, F, mk, x, o: g(L, F, x))
    name = str(rng.choice(sorted(_MATH2)))
    g2 = _MATH2[name]
    return Op(f"{name}(., other)", lambda L, F, mk, x, o: g2(L, F, x, o), other=True)


_INT1 = {
    "floordiv_neg": lambda L, x: x // -2, "rem_neg": lambda L, x: x % -3, "fmod_neg": lambda L, x: L.fmod(x, -3),
    "truediv": lambda L, x: x / 2, "mul_float": lambda L, x: x * 2.5, "pow2": lambda L, x: x ** 2,
    "to_int32": lambda L, x: x.to(L.int32) + 1, "i32_i64": lambda L, x: x.to(L.int32) * x.to(L.int64),
    "i32_f": lambda L, x: x.to(L.int32) - 1.5, "i32_sum": lambda L, x: x.to(L.int32).sum(-1),
    "i32_cumsum": lambda L, x: x.to(L.int32).cumsum(-1) if x.ndim else x.to(L.int32),
    "bool_sum": lambda L, x: (x > 0).sum(), "bool_cumsum": lambda L, x: (x > 0).cumsum(0) if x.ndim else x > 0,
    "bool_add": lambda L, x: (x > 0) + (x < 1), "bool_mul": lambda L, x: (x > 0) * (x < 1),
    "bool_int": lambda L, x: (x > 0) + x, "bool_float": lambda L, x: (x > 0) * 0.5,
    "and": lambda L, x: x & 3, "or": lambda L, x: x | 2, "xor": lambda L, x: x ^ -1,
    "not": lambda L, x: ~x, "bool_xor": lambda L, x: (x > 0) ^ (x < 2),
    "abs_i32": lambda L, x: x.to(L.int32).abs(), "neg_i32": lambda L, x: -x.to(L.int32),
    "clamp": lambda L, x: x.clamp(-1, 2), "to_float": lambda L, x: x.float() / 3,
    "to_double": lambda L, x: x.double().sqrt(), "to_bool": lambda L, x: x.bool(),
    "amax_bool": lambda L, x: (x > 0).amax() if x.numel() else x.sum(), "square": lambda L, x: x.square(),
    "sign": lambda L, x: x.sign(), "max_i32": lambda L, x: L.maximum(x.to(L.int32), x.flip(-1) if x.ndim else x),
    "where_int": lambda L, x: L.where(x > 0, x, -1), "eq_float": lambda L, x: x == x * 0.5,
}
_CAST = {
    # (finite and in range first: float-to-int casts of NaN/inf differ by design, README)
    "to_int64": lambda L, x: x.nan_to_num(0.0, 3e4, -3e4).clamp(-3e4, 3e4).to(L.int64),
    "to_int32": lambda L, x: x.nan_to_num(0.0, 3e4, -3e4).clamp(-3e4, 3e4).to(L.int32),
    "to_bool": lambda L, x: x.bool(), "mask_mul": lambda L, x: (x > 0).to(x.dtype) * x,
    # (no float32 -> float64 cast: it would compare float32 rounding at float64 tolerance)
    # (detached: a float16 gradient flowing back into float64 compares float16 rounding)
    "to_half": lambda L, x: x.detach().half() * 2,
    "bool_sum": lambda L, x: (x > 0).sum(-1) if x.ndim else (x > 0).sum(),
    # (detached: torch has no derivative for floor_divide, tracejit's is zero like floor's)
    "floor_div": lambda L, x: x.detach() // 0.7, "int_trunc_grad": lambda L, x: x * x.long(),
}


def integer(rng, t, is_float: bool) -> Op | None:
    if _float(t):
        name = str(rng.choice(sorted(_CAST)))
        g = _CAST[name]
    else:
        name = str(rng.choice(sorted(_INT1)))
        g = _INT1[name]
    return Op(f"{name}", lambda L, F, mk, x, o: g(L, x))


def shape(rng, t, is_float: bool) -> Op | None:
    nd = t.ndim
    sh = tuple(t.shape)
    if nd == 0:
        return None
    ax = int(rng.integers(-nd, nd))
    b = int(rng.integers(-nd, nd))
    n = sh[ax]
    kinds = ["movedim", "roll", "repeat", "tile", "cumprod", "diff", "index_select",
             "take_along", "masked_select", "repeat_interleave", "unfold", "flip_tuple",
             "tensor_split", "flip_step", "narrow_neg", "expand_as", "swapaxes", "unflatten",
             "logcumsumexp", "squeeze_tuple", "ellipsis_none"]
    if nd >= 2:
        kinds += ["tril", "triu", "rot90"]
    kind = str(rng.choice(kinds))
    if kind == "movedim":
        return Op(f"movedim({ax},{b})", lambda L, F, mk, x, o: x.movedim(ax, b))
    if kind == "swapaxes":
        return Op(f"swapaxes({ax},{b})", lambda L, F, mk, x, o: x.swapaxes(ax, b))
    if kind == "roll":
        if rng.random() < 0.5:
            s = int(rng.integers(-4, 5))
            return Op(f"roll({s},{ax})", lambda L, F, mk, x, o: x.roll(s, ax))
        dims = _dims(rng, nd)
        shifts = tuple(int(v) for v in rng.integers(-3, 4, len(dims)))
        return Op(f"roll({shifts},{dims})", lambda L, F, mk, x, o: x.roll(shifts, dims))
    if kind == "repeat":
        reps = tuple(int(v) for v in rng.integers(0, 3, nd + int(rng.integers(0, 2))))
        return Op(f"repeat{reps}", lambda L, F, mk, x, o: x.repeat(*reps))
    if kind == "tile":
        reps = tuple(int(v) for v in rng.integers(1, 3, int(rng.integers(1, nd + 2))))
        return Op(f"tile{reps}", lambda L, F, mk, x, o: x.tile(reps))
    if kind == "cumprod":
        return Op(f"cumprod({ax})", lambda L, F, mk, x, o: x.cumprod(ax))
    if kind == "logcumsumexp":
        if not _float(t):
            return None
        return Op(f"logcumsumexp({ax})", lambda L, F, mk, x, o: x.logcumsumexp(ax))
    if kind == "diff":
        k = int(rng.integers(1, 3))
        return Op(f"diff(n={k}, dim={ax})", lambda L, F, mk, x, o: x.diff(n=k, dim=ax))
    if kind == "index_select":
        idx = rng.integers(0, max(n, 1), int(rng.integers(0, 5))) if n else np.zeros(0, int)
        return Op(f"index_select({ax}, {idx.tolist()})",
                  lambda L, F, mk, x, o: x.index_select(ax, mk(idx)))
    if kind == "take_along":
        ish = list(sh)
        ish[ax] = int(rng.integers(0, 4))
        if n == 0:
            ish[ax] = 0
        idx = rng.integers(-n, max(n, 1), ish) if n else np.zeros(ish, np.int64)
        return Op(f"take_along_dim(idx{ish}, {ax})",
                  lambda L, F, mk, x, o: L.take_along_dim(x, mk(idx), ax))
    if kind == "masked_select":
        mask = rng.random(tuple(1 if rng.random() < 0.3 else m for m in sh)) < 0.5
        return Op(f"masked_select(mask{list(mask.shape)})",
                  lambda L, F, mk, x, o: x.masked_select(mk(mask)))
    if kind == "repeat_interleave":
        k = int(rng.integers(0, 3))
        return Op(f"repeat_interleave({k}, {ax})",
                  lambda L, F, mk, x, o: x.repeat_interleave(k, ax))
    if kind == "unfold":
        size = int(rng.integers(1, 3))
        step = int(rng.integers(1, 3))
        return Op(f"unfold({ax},{size},{step})", lambda L, F, mk, x, o: x.unfold(ax, size, step))
    if kind == "flip_tuple":
        dims = _dims(rng, nd)
        return Op(f"flip({dims})", lambda L, F, mk, x, o: x.flip(dims))
    if kind == "flip_step":               # a negative step, spelled as torch allows
        st = int(rng.integers(1, 4))
        return Op(f"flip({ax})[::{st}] on dim {ax}",
                  lambda L, F, mk, x, o: x.flip(ax).narrow(ax, 0, n)[
                      (slice(None),) * (ax % nd) + (slice(None, None, st),)])
    if kind == "tensor_split":
        k = int(rng.integers(1, 4))
        return Op(f"tensor_split({k}, {ax})", lambda L, F, mk, x, o: x.tensor_split(k, ax))
    if kind == "narrow_neg":
        if n == 0:
            return None
        st = int(rng.integers(-n, 0))
        ln = int(rng.integers(0, -st + 1))
        return Op(f"narrow({ax},{st},{ln})", lambda L, F, mk, x, o: x.narrow(ax, st, ln))
    if kind == "expand_as":
        return Op("x[:1].expand_as(x)" if n else "expand_as",
                  lambda L, F, mk, x, o: x.narrow(ax, 0, min(n, 1)).expand_as(x)
                  if n == 1 else x.sum(ax, keepdim=True).expand_as(x))
    if kind == "unflatten":
        if n == 0 or n % 2:
            return Op(f"unflatten({ax}, (1, -1))", lambda L, F, mk, x, o: x.unflatten(ax, (1, -1)))
        return Op(f"unflatten({ax}, (2, -1))", lambda L, F, mk, x, o: x.unflatten(ax, (2, -1)))
    if kind == "squeeze_tuple":
        dims = tuple(i for i, m in enumerate(sh) if m == 1) + (ax,)
        return Op(f"squeeze({dims})", lambda L, F, mk, x, o: x.squeeze(dims))
    if kind == "ellipsis_none":
        return Op("x[..., None, ::2]", lambda L, F, mk, x, o: x[..., None, ::2])
    if kind == "tril":
        k = int(rng.integers(-2, 3))
        return Op(f"tril({k})", lambda L, F, mk, x, o: x.tril(k))
    if kind == "triu":
        k = int(rng.integers(-2, 3))
        return Op(f"triu({k})", lambda L, F, mk, x, o: x.triu(k))
    if kind == "rot90":
        k = int(rng.integers(-2, 4))
        d2 = (ax, b) if ax % nd != b % nd else (0, 1)
        return Op(f"rot90({k}, {d2})", lambda L, F, mk, x, o: x.rot90(k, d2))
    return None


def inplace(rng, t, is_float: bool) -> Op | None:
    """An in-place op on x or on a view of x (the caller refuses expanded x)."""
    nd = t.ndim
    sh = tuple(t.shape)
    view = str(rng.choice(["self", "self", "step", "tr", "sel", "diag"]))
    if view == "step" and nd:
        def v(x):
            return x[(slice(None),) * (nd - 1) + (slice(None, None, 2),)]
    elif view == "tr" and nd >= 2:
        def v(x):
            return x.transpose(0, -1)
    elif view == "sel" and nd and sh[0]:
        def v(x):
            return x[-1]
    elif view == "diag" and nd >= 2:
        def v(x):
            return x.diagonal(0, -2, -1)
    else:
        view = "self"

        def v(x):
            return x
    names = ["masked_fill_", "index_add_", "mul_b", "copy_b", "setitem_idx", "setitem_mask",
             "iadd_b", "fill_", "neg_", "abs_", "clamp_max_"]
    if t.dtype is torch_bool():
        names.remove("index_add_")      # (tracejit refuses a bool index_add_: README)
    if _float(t):
        names += ["clamp_t_", "addcmul_", "lerp_", "pow_", "floor_", "div_t", "sub_alpha",
                  "sqrt_", "addcdiv_", "round_", "trunc_", "exp_", "sub_alpha"]
    name = str(rng.choice(names))
    seed = int(rng.integers(1 << 30))

    def fn(L, F, mk, x, o):
        y = v(x)
        r = np.random.default_rng(seed)      # (the same draws on both sides)
        ys = tuple(y.shape)
        if name == "masked_fill_":
            m = r.random(tuple(1 if r.random() < 0.3 else k for k in ys)) < 0.5
            return y.masked_fill_(mk(m), -2)
        if name == "index_add_":
            if not ys:
                return y.add_(1)
            # (non-negative: torch refuses negative ones after writing the rows before them)
            idx = r.integers(0, ys[0], int(r.integers(0, 4))) if ys[0] else np.zeros(0, int)
            src = r.integers(-3, 4, (len(idx),) + ys[1:])
            return y.index_add_(0, mk(idx), mk(src).to(y.dtype), alpha=2)
        if name == "mul_b":
            return y.mul_(_fit(o, ys))
        if name == "copy_b":
            return y.copy_(_fit(o, ys))
        if name == "iadd_b":
            y += _fit(o, ys)
            return y
        if name == "setitem_idx":
            if not ys or not ys[0]:
                return y.fill_(1)
            idx = r.integers(-ys[0], ys[0], int(r.integers(1, 4)))
            y[mk(idx)] = 5
            return y
        if name == "setitem_mask":
            y[y > 0] = 0
            return y
        if name == "fill_":
            return y.fill_(3)
        if name == "neg_":
            return y.neg_()
        if name == "abs_":
            return y.abs_()
        if name == "clamp_max_":
            return y.clamp_max_(1)
        if name == "clamp_t_":
            return y.clamp_(min=_fit(o, ys))
        if name == "addcmul_":
            return y.addcmul_(_fit(o, ys), _fit(o, ys), value=0.5)
        if name == "addcdiv_":
            return y.addcdiv_(_fit(o, ys), _fit(o, ys).abs() + 1, value=0.5)
        if name == "lerp_":
            return y.lerp_(_fit(o, ys), 0.25)
        if name == "pow_":
            return y.pow_(2)
        if name == "floor_":
            return y.floor_()
        if name == "round_":
            return y.round_()
        if name == "trunc_":
            return y.trunc_()
        if name == "exp_":
            return y.clamp_(-2, 2).exp_()
        if name == "sqrt_":
            return y.abs_().sqrt_()
        if name == "div_t":
            return y.div_(_fit(o, ys).abs() + 1)
        return y.sub_(_fit(o, ys), alpha=3)
    return Op(f"{view}-view.{name}", fn, other=True, inplace=True)


def _fit(o, ys: tuple):
    """o (broadcastable to x) cut down to the view's shape ys: its trailing elements."""
    if o.ndim > len(ys):
        o = o.reshape(o.shape[o.ndim - len(ys):]) if o.numel() == int(np.prod(
            o.shape[o.ndim - len(ys):])) else o.sum(tuple(range(o.ndim - len(ys))))
    key = tuple(slice(0, min(a, b)) if a != 1 else slice(None)
                for a, b in zip(o.shape, ys[len(ys) - o.ndim:]))
    o = o[key] if key else o
    return o


def nn(rng, t, is_float: bool) -> Op | None:
    if not _float(t):
        return None
    nd = t.ndim
    sh = tuple(t.shape)
    ax = int(rng.integers(-nd, nd)) if nd else 0
    red = str(rng.choice(["mean", "sum", "none"]))
    kinds = ["normalize", "softplus", "elu", "leaky_relu", "hardswish", "mish", "logsigmoid",
             "hardtanh", "mse", "smooth_l1", "l1", "huber", "rms_norm", "softmin",
             "bce_logits", "relu6", "celu", "softsign", "tanhshrink"]
    if nd >= 1 and sh[-1] and sh[-1] % 2 == 0:
        kinds += ["glu"]
    if nd in (2, 3) and sh[-1] >= 2 and all(sh):
        kinds += ["avg_pool1d", "max_pool1d", "conv1d"]
    if nd in (2, 3) and all(sh):
        kinds += ["pad"]            # (torch pads 2-D/3-D inputs by one (left, right) pair)
    if nd >= 1:
        kinds += ["linear", "cosine_similarity"]
    if nd >= 2 and sh[1]:
        kinds += ["cross_entropy"]
    if nd >= 2 and sh[0] and t.numel() // sh[0] > 1:
        kinds += ["group_norm"]     # (torch refuses one value per group)
    kind = str(rng.choice(kinds))
    if kind == "normalize":
        p = float(rng.choice([1.0, 2.0]))
        return Op(f"normalize(p={p}, dim={ax})", lambda L, F, mk, x, o: F.normalize(x, p=p, dim=ax))
    if kind in ("softplus", "elu", "leaky_relu", "hardswish", "mish", "logsigmoid", "hardtanh",
                "relu6", "celu", "softsign", "tanhshrink"):
        return Op(kind, lambda L, F, mk, x, o: getattr(F, kind)(x))
    if kind in ("mse", "smooth_l1", "l1", "huber"):
        fname = {"mse": "mse_loss", "smooth_l1": "smooth_l1_loss", "l1": "l1_loss",
                 "huber": "huber_loss"}[kind]
        return Op(f"{fname}(., other, {red})",
                  lambda L, F, mk, x, o: getattr(F, fname)(x, o.to(x.dtype).expand_as(x),
                                                           reduction=red),
                  other=True)
    if kind == "bce_logits":
        return Op(f"bce_with_logits(., sigmoid(other), {red})",
                  lambda L, F, mk, x, o: F.binary_cross_entropy_with_logits(
                      x, o.to(x.dtype).sigmoid().expand_as(x), reduction=red), other=True)
    if kind == "rms_norm":
        if nd == 0:
            return None     # (torch refuses an empty normalized_shape; tracejit computes)
        return Op("rms_norm(last)", lambda L, F, mk, x, o: F.rms_norm(x, x.shape[-1:]))
    if kind == "softmin":
        return Op(f"softmin({ax})", lambda L, F, mk, x, o: F.softmin(x, ax))
    if kind == "glu":
        return Op("glu(-1)", lambda L, F, mk, x, o: F.glu(x, -1))
    if kind == "pad":
        mode = str(rng.choice(["constant", "reflect", "replicate", "circular"]))
        pads = tuple(int(v) for v in rng.integers(0 if mode != "constant" else -1, 3, 2))
        return Op(f"pad({pads}, {mode})", lambda L, F, mk, x, o: F.pad(x, pads, mode=mode))
    if kind in ("avg_pool1d", "max_pool1d"):
        k = int(rng.integers(1, 3))
        return Op(f"{kind}({k})", lambda L, F, mk, x, o: getattr(F, kind)(x, k))
    if kind == "conv1d":
        cin = sh[-2] if nd == 3 else sh[0]
        w = rng.standard_normal((2, cin, min(2, sh[-1]))).astype(np.float64)
        pad = int(rng.integers(0, 2))
        return Op(f"conv1d(w{list(w.shape)}, padding={pad})",
                  lambda L, F, mk, x, o: F.conv1d(x, mk(w).to(x.dtype), padding=pad))
    if kind == "linear":
        w = rng.standard_normal((int(rng.integers(1, 4)), sh[-1])).astype(np.float64)
        bias = rng.random() < 0.5
        return Op(f"linear(w{list(w.shape)}, bias={bias})",
                  lambda L, F, mk, x, o: F.linear(x, mk(w).to(x.dtype),
                                                  mk(w[:, 0]).to(x.dtype) if bias else None))
    if kind == "cosine_similarity":
        return Op(f"cosine_similarity(., other, {ax})",
                  lambda L, F, mk, x, o: F.cosine_similarity(x, o, dim=ax), other=True)
    if kind == "cross_entropy":
        c = sh[1]
        tgt = rng.integers(0, c, (sh[0],) + sh[2:])
        ls = float(rng.choice([0.0, 0.1]))
        return Op(f"cross_entropy(target, {red}, label_smoothing={ls})",
                  lambda L, F, mk, x, o: F.cross_entropy(x, mk(tgt), reduction=red,
                                                         label_smoothing=ls))
    if kind == "group_norm":
        return Op("group_norm(1)", lambda L, F, mk, x, o: F.group_norm(x, 1))
    return None


FAMILIES = {"reduce_tuple": reduce_tuple, "math": math, "integer": integer, "shape": shape,
            "inplace": inplace, "nn": nn}
WEIGHTS = {"reduce_tuple": 1.5, "math": 1.5, "integer": 1.2, "shape": 2.0, "inplace": 2.0,
           "nn": 1.2}


def draw(rng, t, is_float: bool) -> Op | None:
    """One op of a random family for torch tensor t (None: nothing fits)."""
    names = sorted(FAMILIES)
    w = np.array([WEIGHTS[k] for k in names])
    fam = names[int(rng.choice(len(names), p=w / w.sum()))]
    return FAMILIES[fam](rng, t, is_float)


__all__ = ["Op", "draw", "EXT_SEED", "FAMILIES"]
