"""tracejit: a tracing JIT compiler for define-by-run tensor programs."""
from . import ir
from .ir import dtypes as _dt
from .tracer import Tensor
from .tracer.tensor_base import is_tensor
from . import autograd
from .tracer.composites import (gelu, layer_norm, log_softmax, logsumexp, mean,
                                mse, mse_loss, relu, sigmoid, softmax, softplus, var)
from .tracer.losses import cross_entropy
from .tracer.creation import (arange, empty, full, full_like, linspace, ones, ones_like, tensor,
                              zeros, zeros_like)
from .tracer.rng import (Generator, bernoulli, default_generator, dropout, get_rng_state,
                         initial_seed, manual_seed, rand, rand_like, randint, randn, randn_like,
                         set_rng_state)
from .tracer.function import checkpoint
from .tracer.functional import vjp
from .tracer.ops import (abs, add, broadcast_to, cast, cat, clip, concatenate, cos, div, eq,
                         exp, expand, flatten, ge, gt, le, log, logical_and, logical_not,
                         logical_or, lt, matmul, maximum, minimum, mul, ne, neg, pad,
                         permute, pow, reshape, sign, sin, sqrt, squeeze, stack, stop_gradient,
                         sub, sum, swapaxes, tanh, transpose, unsqueeze)
from .tracer.ops import floor_divide, fmod, remainder
from .tracer.bitwise import (bitwise_and, bitwise_left_shift, bitwise_not, bitwise_or,
                             bitwise_right_shift, bitwise_xor, logical_xor)
from .tracer.ops import erf, erfc
from .tracer.scans import all, any, cumprod, cumsum, prod  # noqa: A004
from .tracer.sorting import argsort, sort, topk
from .tracer.sampling import multinomial, randperm
from .tracer.selection import amax, amin, argmax, argmin, max, min
from .tracer.state import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .tracer.state import inference_mode, is_inference_mode_enabled
from .tracer.layout import (bmm, chunk, flip, fliplr, flipud, narrow, repeat, roll, split, t,
                            tile, unbind)
from .tracer.masking import (eye, masked_fill, nonzero, one_hot, tril, tril_indices, triu,
                             triu_indices, where)
from .tracer.norms import dist, norm, std, std_mean, var_mean
from .tracer.memory_format import (channels_last, channels_last_3d, contiguous_format,
                                   is_complex, is_floating_point, memory_format,
                                   preserve_format)
from .tracer.stacking import reciprocal
from .tracer.foreach import *  # noqa: F401,F403 (torch's _foreach_* list ops)
from .tracer.einsum import einsum
from .tracer.gathering import gather, meshgrid, ravel, scatter_add, take_along_dim
from .tracer.products import (addbmm, addmm, baddbmm, diag, diagonal, dot, kron, mm, mv, outer,
                              tensordot, trace)
from .tracer.stacking import (atleast_1d, atleast_2d, atleast_3d, column_stack, count_nonzero,
                              dsplit, dstack, hsplit, hstack, index_select, movedim, rot90,
                              rsqrt, select, square, tensor_split, vsplit, vstack)
from .tracer.stacking import cartesian_prod, repeat_interleave
from .tracer.index_ops import (index_add, masked_select, scatter, scatter_reduce)
from .tracer.search_ops import (allclose, bucketize, isclose, kthvalue, median, searchsorted,
                                unique)
from .tracer.math_ops import *  # noqa: F401,F403,A001  (round, log1p, hypot, lerp, ...)
from .tracer.trig_ops import *  # noqa: F401,F403  (tan, atan2, log2, copysign, arcsin, ...)
from .tracer.special_ops import (digamma, erfinv, frexp, i0, ldexp, lgamma, mvlgamma,
                                 nextafter, polygamma)
from .tracer.series_ops import (cdist, cross, diff, isfinite, isinf, isnan, logaddexp,
                                logcumsumexp)
# the view ops again, as views of their input (in-place ops write through; see views.py)
from .tracer.views import (broadcast_to, chunk, diagonal, expand, flatten, movedim,  # noqa: F811
                           narrow, permute, reshape, select, split, squeeze, swapaxes, t,
                           transpose, unbind, unflatten, unsqueeze)
from .tracer.views import dsplit, hsplit, ravel, tensor_split, vsplit  # noqa: F811
from .tracer.shape_views import atleast_1d, atleast_2d, atleast_3d  # noqa: F811
from .tracer.linalg_ops import cholesky_legacy as cholesky, det, inverse, logdet, slogdet
from .tracer.linalg_spectral import pinverse
from .tracer.linalg_compose import cholesky_inverse, cholesky_solve, matrix_power
from .tracer.stats_ops import (corrcoef, cov, cummax, cummin, mode, nanmean, nanquantile,
                               nansum, quantile)
from .tracer.hist_ops import bincount, histc, histogram
from .tracer.scatter_ops import (as_strided, diagonal_scatter, index_put, masked_scatter, put,
                                 select_scatter, slice_scatter, take)
from .tracer.assorted_ops import (block_diag, broadcast_shapes, broadcast_tensors, chain_matmul,
                                  combinations, cumulative_trapezoid, inner, isin, renorm,
                                  trapezoid, trapz, unravel_index, vander, vdot)
from . import linalg
from . import special
from .runtime import llvm_backend as _llvm_backend  # noqa: F401  (registers the default backend)
from .runtime import cuda_backend as _cuda_backend  # noqa: F401  (registers "cuda")
from .runtime import cuda_graphs as _cuda_graphs  # noqa: F401  (registers "cuda_graphs")
from .runtime import eager_kernels as _eager_kernels  # noqa: F401  (large eager ops)
from .runtime import eager_composites as _eager_composites  # noqa: F401  (hot composites)
from .devices import Device, cuda_available, device
from .runtime.compile import clear_cache, compile
from .runtime.jit_spelling import jit
from .transforms import grad, hessian, jacobian, value_and_grad
from .transforms import jacfwd, jacrev, jvp, linearize
from .transforms import vmap
from . import nn
from . import distributed
from . import optim
from . import func
from . import amp
from . import utils
from . import distributions
from .tracer.autocast import autocast, get_autocast_dtype, is_autocast_enabled
from .serialization import load, save
from .tracer.ops import cast as astype
from .ir.dtype_info import finfo, iinfo
from .ir.dtypes import DType as dtype  # noqa: A001  (torch.dtype: hints, isinstance)
from .tracer.creation import empty_like
from .tracer.numpy_share import as_tensor, from_numpy


def get_default_dtype() -> _dt.DType:
    """torch.get_default_dtype(): the dtype of Python floats and of tj.zeros() & co.: float32
    (there is no set_default_dtype)."""
    return _dt.f32

float16, bfloat16, float32, float64 = _dt.f16, _dt.bf16, _dt.f32, _dt.f64
int32, int64, bool_ = _dt.i32, _dt.i64, _dt.bool_
uint8, int8, int16, short = _dt.u8, _dt.i8, _dt.i16, _dt.i16
half, float, double, long = _dt.f16, _dt.f32, _dt.f64, _dt.i64       # noqa: A001
bool, int = _dt.bool_, _dt.i32                # noqa: A001  (torch.bool, torch.int)
clamp = clip
detach = stop_gradient
from ._version import __version__
