"""`tracejit.nn.utils.parametrizations`: torch's new-style orthogonal, spectral_norm and
weight_norm, each a module registered with nn.utils.parametrize (nn/parametrize.py), so the
state_dict keys (`parametrizations.weight.original`, `...weight.0._u`, `...weight.0.base`)
are torch's and a torch checkpoint loads as it is.

orthogonal: Q = base @ map(X) with torch's maps: "cayley" (a solve), "householder" (the
product of reflections, built from ops) and "matrix_exp" (scaling and squaring of a degree-18
Taylor polynomial; the number of squarings depends on the norm, so this map runs eagerly and
raises inside a compiled function: use "cayley" or "householder" there). The orthogonal
completion of a non-square weight draws random columns (tj's generator), so its `base`
differs from torch's unless loaded from a state_dict."""
from __future__ import annotations

import math
import numpy as np

from ...tracer import ops
from ...tracer.creation import zeros_like
from ...tracer.masking import eye, tril
from ...tracer.ops import _err
from ...tracer.products import diagonal, dot, mv
from ...tracer.rng import randn
from ...tracer.shape_ops import concatenate, swapaxes
from ...tracer.linalg_ops import solve
from ...tracer.state import no_grad
from ...tracer.tensor import Tensor
from .. import functional as F
from ..module import Module
from ..parametrize import register_parametrization, weight_norm

__all__ = ["orthogonal", "spectral_norm", "weight_norm"]


def _mT(x: Tensor) -> Tensor:
    return swapaxes(x, -1, -2)


def _matrix_exp(a: Tensor) -> Tensor:
    """exp(a) for (batches of) square matrices: a / 2^s by Taylor to degree 18, squared s
    times (s from the largest 1-norm, so the scaled norm is at most 1/2)."""
    if a._traced:
        raise _err("orthogonal", "orthogonal_map='matrix_exp' inside a compiled function: its "
                   "number of squarings depends on the matrix's norm; use "
                   "orthogonal_map='cayley' or 'householder' in compiled code", RuntimeError)
    host = np.abs(a.detach().numpy())
    norm = float(host.sum(axis=-2).max()) if host.size else 0.0
    s = max(0, math.ceil(math.log2(norm / 0.5))) if norm > 0.5 else 0
    x = ops.mul(a, 1.0 / 2 ** s)
    n = a.shape[-1]
    ident = ops.broadcast_to(eye(n, dtype=a.dtype, device=a.device), a.shape)
    out = ident
    for k in range(18, 0, -1):                      # Horner: I + x/1 (I + x/2 (I + ...))
        out = ops.add(ident, ops.mul(x @ out, 1.0 / k))
    for _ in range(s):
        out = out @ out
    return out


def _householder_product(a: Tensor, tau: Tensor) -> Tensor:
    """The first k columns of H_1 ... H_k, H_i = I - tau_i v_i v_i^T with v_i the i-th column
    of a below the diagonal and 1 on it (torch.linalg.householder_product), from ops."""
    n, k = a.shape[-2], a.shape[-1]
    ident = eye(n, k, dtype=a.dtype, device=a.device)
    low = ops.add(tril(a, -1), ident)               # the vectors v_i as columns
    q = ops.broadcast_to(ident, a.shape)
    for i in range(k - 1, -1, -1):
        v = low[..., :, i:i + 1]                    # [..., n, 1]
        t = ops.reshape(tau[..., i], (*tau.shape[:-1], 1, 1))
        q = ops.sub(q, ops.mul(t, v @ (_mT(v) @ q)))
    return q


def _make_orthogonal(a: np.ndarray) -> np.ndarray:
    """The Q of a = QR with R's diagonal made non-negative (torch's geqrf-based one)."""
    q, r = np.linalg.qr(a)
    d = np.sign(np.diagonal(r, axis1=-2, axis2=-1))
    d = np.where(d == 0, 1, d)
    return q * d[..., None, :]


class _Orthogonal(Module):
    def __init__(self, weight: Tensor, orthogonal_map: str, *,
                 use_trivialization: bool = True) -> None:
        super().__init__()
        self.shape = tuple(weight.shape)
        self.orthogonal_map = orthogonal_map
        if use_trivialization:
            self.register_buffer("base", None)

    def forward(self, x: Tensor) -> Tensor:
        n, k = x.shape[-2], x.shape[-1]
        transposed = n < k
        if transposed:
            x = _mT(x)
            n, k = k, n
        if self.orthogonal_map in ("matrix_exp", "cayley"):
            x = tril(x)
            if n != k:
                pad = zeros_like(x[..., :, :1]) if k else x
                x = concatenate([x] + [pad] * (n - k), -1)
            a = ops.sub(x, _mT(x))
            if self.orthogonal_map == "matrix_exp":
                q = _matrix_exp(a)
            else:
                ident = eye(n, dtype=a.dtype, device=a.device)
                q = solve(ops.add(ident, ops.mul(a, -0.5)), ops.add(ident, ops.mul(a, 0.5)))
            if n != k:
                q = q[..., :k]
        else:
            a = tril(x, -1)
            tau = ops.div(2.0, ops.add(1.0, ops.mul(a, a).sum(-2)))
            q = _householder_product(a, tau)
            signs = ops.cast(ops.cast(diagonal(x, 0, -2, -1), "int32"), q.dtype)
            q = ops.mul(q, ops.reshape(signs, (*signs.shape[:-1], 1, signs.shape[-1])))
        if self.__dict__["_buffers"].get("base") is not None:
            q = self.base @ q
        return _mT(q) if transposed else q

    def right_inverse(self, q: Tensor) -> Tensor:
        if tuple(q.shape) != self.shape:
            raise ValueError(f"Expected a matrix or batch of matrices of shape {self.shape}. "
                             f"Got a tensor of shape {tuple(q.shape)}.")
        init = q
        n, k = q.shape[-2], q.shape[-1]
        transpose = n < k
        if transpose:
            q = _mT(q)
            n, k = k, n
        if "base" not in self.__dict__["_buffers"]:
            if self.orthogonal_map in ("matrix_exp", "cayley"):
                raise NotImplementedError("It is not possible to assign to the matrix "
                                          "exponential or the Cayley parametrizations when "
                                          "use_trivialization=False.")
            raise NotImplementedError("orthogonal(use_trivialization=False) with the "
                                      "householder map: assigning needs geqrf, which "
                                      "tracejit lacks")
        host = np.asarray(q.detach().numpy())
        if n == k:
            ident = np.eye(k)
            gram = np.swapaxes(host, -1, -2) @ host
            tol = 10.0 * n * np.finfo(host.dtype).eps
            base = host.copy() if np.allclose(gram, ident, atol=tol, rtol=1e-5) \
                else _make_orthogonal(host)
        else:
            extra = randn(*q.shape[:-2], n, n - k, dtype=q.dtype).numpy()
            base = _make_orthogonal(np.concatenate([host, extra], -1))
        self.base = ops.as_tensor(np.ascontiguousarray(base, dtype=host.dtype)).to(
            device=q.device)
        neg_id = np.zeros(init.shape, dtype=host.dtype)
        idx = np.arange(min(init.shape[-2:]))
        neg_id[..., idx, idx] = -1.0
        return ops.as_tensor(neg_id).to(device=init.device)


def orthogonal(module: Module, name: str = "weight", orthogonal_map: str | None = None, *,
               use_trivialization: bool = True) -> Module:
    """Make `module.<name>` an orthogonal matrix (or batch of them; orthonormal columns or
    rows when not square), as torch.nn.utils.parametrizations.orthogonal."""
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if weight.ndim < 2:
        raise ValueError(f"Expected a matrix or batch of matrices. Got a tensor of "
                         f"{weight.ndim} dimensions.")
    if orthogonal_map is None:
        orthogonal_map = "matrix_exp" if weight.shape[-2] == weight.shape[-1] \
            else "householder"
    if orthogonal_map not in ("matrix_exp", "cayley", "householder"):
        raise ValueError(f'orthogonal_map has to be one of "matrix_exp", "cayley", '
                         f'"householder". Got: {orthogonal_map}')
    orth = _Orthogonal(weight, orthogonal_map, use_trivialization=use_trivialization)
    register_parametrization(module, name, orth, unsafe=True)
    return module


class _SpectralNorm(Module):
    """weight / sigma, sigma estimated by power iteration on the weight as a (size(dim), -1)
    matrix (u, v the buffers `_u`, `_v`; 15 iterations at registration, then
    n_power_iterations per call in training mode); a 1-D weight is normalized instead."""

    def __init__(self, weight: Tensor, n_power_iterations: int = 1, dim: int = 0,
                 eps: float = 1e-12) -> None:
        super().__init__()
        nd = weight.ndim
        if dim >= nd or dim < -nd:
            raise IndexError(f"Dimension out of range (expected to be in range of [-{nd}, "
                             f"{nd - 1}] but got {dim})")
        if n_power_iterations <= 0:
            raise ValueError(f"Expected n_power_iterations to be positive, but got "
                             f"n_power_iterations={n_power_iterations}")
        self.dim = dim if dim >= 0 else dim + nd
        self.eps = eps
        if nd > 1:
            self.n_power_iterations = n_power_iterations
            with no_grad():
                mat = self._matrix(weight)
                h, w = mat.shape
                u = randn(h, dtype=weight.dtype, device=weight.device)
                v = randn(w, dtype=weight.dtype, device=weight.device)
                self.register_buffer("_u", F.normalize(u, dim=0, eps=eps))
                self.register_buffer("_v", F.normalize(v, dim=0, eps=eps))
                self._power_method(mat, 15)

    def _matrix(self, weight: Tensor) -> Tensor:
        if self.dim != 0:
            weight = weight.permute(self.dim, *(d for d in range(weight.ndim) if d != self.dim))
        return ops.reshape(weight, (weight.shape[0], -1))

    def _power_method(self, mat: Tensor, n: int) -> None:
        with no_grad():
            for _ in range(n):
                # (in place: the buffers carry over to the next call, as torch's out=)
                self._u.copy_(F.normalize(mv(mat, self._v), dim=0, eps=self.eps))
                self._v.copy_(F.normalize(mv(_mT(mat), self._u), dim=0, eps=self.eps))

    def forward(self, weight: Tensor) -> Tensor:
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        mat = self._matrix(weight)
        if self.training:
            self._power_method(mat, self.n_power_iterations)
        u, v = self._u.clone(), self._v.clone()
        return ops.div(weight, dot(u, mv(mat, v)))

    def right_inverse(self, value: Tensor) -> Tensor:
        return value


def spectral_norm(module: Module, name: str = "weight", n_power_iterations: int = 1,
                  eps: float = 1e-12, dim: int | None = None) -> Module:
    """Divide `module.<name>` by its spectral norm (torch's parametrization)."""
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if dim is None:
        dim = 1 if "ConvTranspose" in type(module).__name__ else 0
    register_parametrization(module, name, _SpectralNorm(weight, n_power_iterations, dim, eps))
    return module
