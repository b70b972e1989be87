"""`tracejit.linalg` (also `tj.linalg`), PyTorch's torch.linalg spelling for what tracejit
composes from its primitives: vector, matrix (not the SVD ones) and combined norms
(decompositions are out of scope)."""
from .tracer.norms import vector_norm
from .tracer.math_norms import matrix_norm, norm

__all__ = ["vector_norm", "matrix_norm", "norm"]
