"""`tracejit.linalg` (also `tj.linalg`), PyTorch's torch.linalg spelling for what tracejit
composes from its primitives: the vector norms (decompositions are out of scope)."""
from .tracer.norms import vector_norm

__all__ = ["vector_norm"]
