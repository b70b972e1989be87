"""Fusion into kernels and their lowering to LLVM (CPU) and CUDA C (GPU)."""
