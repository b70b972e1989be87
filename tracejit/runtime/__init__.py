"""Compiled executables, backends, the kernel cache and the @compile entry point."""
