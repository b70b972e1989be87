"""`tracejit.linalg` (also `tj.linalg`), PyTorch's torch.linalg: vector, matrix and combined
norms, and the factorizations and solvers (tracer/linalg_ops.py on ir/prims_linalg.py), eager
and inside tj.compile (LAPACK through NumPy, called between the compiled kernels)."""
from .tracer.norms import vector_norm
from .tracer.math_norms import matrix_norm, norm
from .tracer.linalg_ops import (LinAlgError, cholesky, cholesky_ex, det, inv, inv_ex, slogdet,
                                solve, solve_triangular)
from .tracer.linalg_compose import cond, matrix_power, multi_dot, vecdot
from .tracer.linalg_spectral import (eigh, eigvalsh, lstsq, matrix_rank, pinv, qr, svd,
                                     svdvals)

__all__ = ["vector_norm", "matrix_norm", "norm", "LinAlgError", "inv", "inv_ex", "solve",
           "solve_triangular", "cholesky", "cholesky_ex", "det", "slogdet", "qr", "eigh",
           "eigvalsh", "svd", "svdvals", "pinv", "lstsq", "matrix_rank", "cond",
           "matrix_power", "multi_dot", "vecdot"]
