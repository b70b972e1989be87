"""L-BFGS as torch.optim.LBFGS: the two-loop recursion over a history of (y, s) pairs, torch's
first step length min(1, 1/|g|_1) * lr, its stopping tests (gradient, change of loss, change
of the step, max_iter and max_eval), and optionally its strong-Wolfe line search (cubic
interpolation, bracketing and zoom), in torch's order of operations so that the parameters
follow torch's trajectory.

Every decision of the algorithm looks at values (curvature test, line-search conditions,
stopping tests), so the step runs eagerly on the parameters' devices with the flat vector
math in tensors and the scalars as NumPy scalars of the parameters' dtype (see _val); inside a compiled function it raises (the
closure it calls may itself be compiled)."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from ..tracer import ops
from ..tracer.creation import zeros
from ..tracer.state import STATE, enable_grad, no_grad
from ..tracer.tensor import Tensor
from .optimizer import Optimizer, as_float

__all__ = ["LBFGS"]


def _val(t: Tensor) -> Any:
    """A 0-d result as a NumPy scalar of its dtype: the scalar math then rounds as torch's
    0-d tensors of the parameters' dtype do (float32 stays float32; Python floats are weak)."""
    return t.dtype.np.type(t.item())


def _cubic_minimum(x1: float, f1: float, g1: float, x2: float, f2: float, g2: float,
                   bounds: tuple[float, float] | None = None) -> float:
    """The minimiser of the cubic through (x1, f1, g1) and (x2, f2, g2), clamped to bounds
    (default: the interval of x1, x2); the bounds' midpoint where the cubic has none."""
    lo, hi = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    disc = d1 ** 2 - g1 * g2
    if disc < 0:
        return (lo + hi) / 2.0
    d2 = np.sqrt(disc)
    if x1 <= x2:
        at = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        at = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(at, lo), hi)


def _strong_wolfe(evaluate: Callable[[float], tuple[float, Tensor]], t: float, d: Tensor,
                  f: float, g: Tensor, gtd: float, c1: float = 1e-4, c2: float = 0.9,
                  tolerance_change: float = 1e-9, max_ls: int = 25
                  ) -> tuple[float, Tensor, float, int]:
    """A step length t along d meeting the strong Wolfe conditions (f, g, gtd: the loss, flat
    gradient and directional derivative at t = 0); returns (loss, gradient, t, evaluations).
    evaluate(t) gives the loss and flat gradient at x + t d."""
    d_norm = _val(ops.abs(d).max())
    f_new, g_new = evaluate(t)
    evals = 1
    gtd_new = _val(g_new.dot(d))
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done = False
    it = 0
    bracket: list[float] = []
    bf: list[float] = []
    bg: list[Tensor] = []
    bgtd: list[float] = []
    while it < max_ls:                      # bracketing phase
        if f_new > f + c1 * t * gtd or (it > 1 and f_new >= f_prev):
            bracket, bf, bg, bgtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], \
                [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bf, bg, done = [t], [f_new], [g_new], True
            break
        if gtd_new >= 0:
            bracket, bf, bg, bgtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], \
                [gtd_prev, gtd_new]
            break
        lo, hi = t + 0.01 * (t - t_prev), t * 10
        t_prev, t = t, _cubic_minimum(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, (lo, hi))
        f_prev, g_prev, gtd_prev = f_new, g_new, gtd_new
        f_new, g_new = evaluate(t)
        evals += 1
        gtd_new = _val(g_new.dot(d))
        it += 1
    if it == max_ls:
        bracket, bf, bg = [0.0, t], [f, f_new], [g, g_new]
    # zoom: shrink the bracket until a point meets the conditions
    stalled = False
    low, high = (0, 1) if bf[0] <= bf[-1] else (1, 0)
    while not done and it < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_minimum(bracket[0], bf[0], bgtd[0], bracket[1], bf[1], bgtd[1])
        top, bottom = max(bracket), min(bracket)
        eps = 0.1 * (top - bottom)
        if min(top - t, t - bottom) < eps:
            # too close to an end: move away from it, unless the last step already stalled
            if stalled or t >= top or t <= bottom:
                t = top - eps if abs(t - top) < abs(t - bottom) else bottom + eps
                stalled = False
            else:
                stalled = True
        else:
            stalled = False
        f_new, g_new = evaluate(t)
        evals += 1
        gtd_new = _val(g_new.dot(d))
        it += 1
        if f_new > f + c1 * t * gtd or f_new >= bf[low]:
            bracket[high], bf[high], bg[high], bgtd[high] = t, f_new, g_new, gtd_new
            low, high = (0, 1) if bf[0] <= bf[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high] - bracket[low]) >= 0:
                bracket[high], bf[high], bg[high], bgtd[high] = \
                    bracket[low], bf[low], bg[low], bgtd[low]
            bracket[low], bf[low], bg[low], bgtd[low] = t, f_new, g_new, gtd_new
    return bf[low], bg[low], bracket[low], evals


class LBFGS(Optimizer):
    """torch.optim.LBFGS: `LBFGS(params, lr=1, max_iter=20, max_eval=None,
    tolerance_grad=1e-7, tolerance_change=1e-9, history_size=100, line_search_fn=None)`;
    `step(closure)` runs up to max_iter iterations, the closure re-evaluating the loss and
    its gradients. One parameter group only, as torch."""

    def __init__(self, params: Iterable, lr: Any = 1, max_iter: int = 20,
                 max_eval: int | None = None, tolerance_grad: float = 1e-7,
                 tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= as_float(lr):
            raise ValueError(f"Invalid learning rate: {lr}")
        if line_search_fn not in (None, "strong_wolfe"):
            raise ValueError(f"LBFGS: line_search_fn must be None or 'strong_wolfe', got "
                             f"{line_search_fn!r}")
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = {"lr": lr, "max_iter": max_iter, "max_eval": max_eval,
                    "tolerance_grad": tolerance_grad, "tolerance_change": tolerance_change,
                    "history_size": history_size, "line_search_fn": line_search_fn}
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        self._params: list[Tensor] = self.param_groups[0]["params"]

    # -- the parameters as one flat vector ------------------------------------------------------
    def _flat_grad(self) -> Tensor:
        parts = [zeros(p.numel(), dtype=p.dtype, device=p.device) if p.grad is None
                 else ops.reshape(p.grad, (-1,)) for p in self._params]
        return ops.cat(parts, 0)

    def _move(self, step: float, direction: Tensor) -> None:
        """params += step * direction (flat)."""
        offset = 0
        for p in self._params:
            n = p.numel()
            p.add_(ops.reshape(direction[offset:offset + n], p.shape), alpha=step)
            offset += n

    def _evaluate(self, closure: Callable, start: list[Tensor], t: float,
                  d: Tensor) -> tuple[float, Tensor]:
        """Loss and flat gradient at start + t d; the parameters are put back to start."""
        self._move(t, d)
        with enable_grad():
            loss = float(closure())
        g = self._flat_grad()
        for p, s in zip(self._params, start):
            p.copy_(s)
        return loss, g

    def step(self, closure: Callable[[], Any]) -> Any:  # type: ignore[override]
        """Up to max_iter L-BFGS iterations; returns the closure's first loss."""
        if closure is None:
            raise RuntimeError("LBFGS.step requires a closure that re-evaluates the model and "
                               "returns the loss")
        if STATE.traces:
            raise RuntimeError("LBFGS.step inside a compiled function: L-BFGS decides on "
                               "values (curvature, line search, stopping tests) and runs "
                               "eagerly; call step() outside tj.compile (the closure may "
                               "call a compiled function)")
        group = self.param_groups[0]
        lr = as_float(group["lr"])
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tol_grad, tol_change = group["tolerance_grad"], group["tolerance_change"]
        history = group["history_size"]
        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        with enable_grad():
            first_loss = closure()
        loss = float(first_loss)
        evals = 1
        state["func_evals"] += 1
        with no_grad():
            g = self._flat_grad()
            if _val(ops.abs(g).max()) <= tol_grad:
                return first_loss
            d, t = state.get("d"), state.get("t")
            dirs, stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
            h_diag = state.get("H_diag")
            prev_g, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")
            n_iter = 0
            while n_iter < max_iter:
                n_iter += 1
                state["n_iter"] += 1
                if state["n_iter"] == 1:
                    d, dirs, stps, ro, h_diag = ops.neg(g), [], [], [], 1.0
                else:
                    d, h_diag = self._direction(state, g, prev_g, d, t, dirs, stps, ro,
                                                h_diag, history)
                prev_g = g.clone()
                prev_loss = loss
                t = min(1.0, 1.0 / _val(ops.abs(g).sum())) * lr if state["n_iter"] == 1 \
                    else lr
                gtd = _val(g.dot(d))
                if gtd > -tol_change:              # not a descent direction
                    break
                ls_evals = 0
                if group["line_search_fn"] == "strong_wolfe":
                    start = [p.clone() for p in self._params]
                    loss, g, t, ls_evals = _strong_wolfe(
                        lambda s: self._evaluate(closure, start, s, d), t, d, loss, g, gtd)
                    self._move(t, d)
                    small_grad = _val(ops.abs(g).max()) <= tol_grad
                else:
                    self._move(t, d)
                    small_grad = False
                    if n_iter != max_iter:
                        with enable_grad():
                            loss = float(closure())
                        g = self._flat_grad()
                        small_grad = _val(ops.abs(g).max()) <= tol_grad
                        ls_evals = 1
                evals += ls_evals
                state["func_evals"] += ls_evals
                if n_iter == max_iter or evals >= max_eval or small_grad:
                    break
                if _val(ops.abs(d).max()) * abs(t) <= tol_change or \
                        abs(loss - prev_loss) < tol_change:
                    break
            state.update({"d": d, "t": t, "old_dirs": dirs, "old_stps": stps, "ro": ro,
                          "H_diag": h_diag, "prev_flat_grad": prev_g, "prev_loss": prev_loss})
        return first_loss

    @staticmethod
    def _direction(state: dict, g: Tensor, prev_g: Tensor, d: Tensor, t: float,
                   dirs: list, stps: list, ro: list, h_diag: float,
                   history: int) -> tuple[Tensor, float]:
        """The two-loop recursion: -H g for the history updated with the last step."""
        y = ops.sub(g, prev_g)
        s = ops.mul(d, t)
        ys = _val(y.dot(s))
        if ys > 1e-10:                             # keep the pair only if curvature is positive
            if len(dirs) == history:
                dirs.pop(0)
                stps.pop(0)
                ro.pop(0)
            dirs.append(y)
            stps.append(s)
            ro.append(1.0 / ys)
            h_diag = ys / _val(y.dot(y))
        al = state.setdefault("al", [None] * history)
        q = ops.neg(g)
        for i in range(len(dirs) - 1, -1, -1):
            al[i] = _val(stps[i].dot(q)) * ro[i]
            q.add_(dirs[i], alpha=-al[i])
        r = ops.mul(q, h_diag)
        for i in range(len(dirs)):
            be_i = _val(dirs[i].dot(r)) * ro[i]
            r.add_(stps[i], alpha=al[i] - be_i)
        return r, h_diag

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # torch keeps t, ro, H_diag and al as 0-d tensors, the history as lists of tensors
        p = self._params[0]
        st = self.state.get(p)
        if not st:
            return
        scalar = p.dtype.np.type
        for k in ("t", "H_diag"):
            if st.get(k) is not None:
                st[k] = scalar(float(st[k]))
        if st.get("prev_loss") is not None:
            st["prev_loss"] = float(st["prev_loss"])
        for k in ("ro", "al"):
            if st.get(k) is not None:
                st[k] = [None if v is None else scalar(float(v)) for v in st[k]]
        for k in ("old_dirs", "old_stps"):
            if st.get(k) is not None:
                st[k] = [_tensor_like(p, v) for v in st[k]]
        for k in ("d", "prev_flat_grad"):
            if st.get(k) is not None:
                st[k] = _tensor_like(p, st[k])


def _tensor_like(p: Tensor, v: Any) -> Tensor:
    """A loaded vector (tracejit tensor, NumPy array or another framework's tensor) as a
    tensor of p's dtype on p's device."""
    if isinstance(v, Tensor):
        return v.clone()
    arr = v.detach().cpu().numpy() if hasattr(v, "detach") else v
    return ops.as_tensor(arr).to(device=p.device, dtype=p.dtype)
