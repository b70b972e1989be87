"""The seam between compiled graphs and the code that runs them.

A backend turns a Graph into an Executable: `run(list of arrays) -> list of arrays`. "llvm"
(runtime/llvm_backend.py) is the default and "cuda" (runtime/cuda_backend.py) runs on the GPU;
"interpreter" runs the NumPy reference interpreter, which tests keep as the oracle
(`tj.compile(fn, backend="interpreter")`)."""
from __future__ import annotations

import os
import threading
from typing import Callable, Sequence

import numpy as np

from ..ir.core import Graph
from ..ir.interpret import interpret
from ..ir.primitives import P


class _StepHooks(threading.local):
    def __init__(self) -> None:
        self.fns: list[Callable[[], None]] = []


# Callables run after every Python-driven step of an executable running on this thread, while
# the list is not empty: an MPI collective started inside a compiled step advances only inside
# MPI calls, so where no progress thread advances it (TRACEJIT_MPI_PROGRESS_THREAD=0) its runner
# puts its backend's progress here until it is waited for (distributed/traced.py).
STEP_HOOKS = _StepHooks()


class Executable:
    """A compiled graph. Subclasses provide run(); the dumps are optional per backend."""

    backend = "?"
    plan = None        # the fusion plan (codegen.fusion.Plan) of a backend that generates code

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    @classmethod
    def from_traced(cls, graph: Graph, passes: "PendingPasses") -> "Executable":
        """The executable of a traced graph whose standard passes have not run yet: they run
        now, unless the backend can do without them (the LLVM backend's disk cache)."""
        passes()
        return cls(graph)

    def run(self, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def reuse_outputs(self, indices: Sequence[int]) -> None:
        """The caller copies the outputs at `indices` elsewhere before its next call on the same
        thread (write-backs of in-place updates), so a backend may hand them out in memory it
        reuses. The default keeps every output new."""

    def write_back(self, pairs: Sequence[tuple[int, int]]) -> None:
        """For each (output j, input i): the caller stores output j into the array it passed as
        input i (a capture updated in place), unless output j *is* that array. So a backend
        may store it there itself, once the call's work is done, and hand that input back as
        output j (runtime/cuda_graphs.py does, inside the graph). The default does nothing."""

    def stage_text(self, stage: str) -> str:
        raise NotImplementedError(f"the {self.backend} backend has no '{stage}' stage: kernels, "
                                  f"LLVM IR and assembly come from the LLVM backend "
                                  f"(TRACEJIT_BACKEND=llvm), CUDA source from device='cuda'")


class InterpreterExecutable(Executable):
    backend = "interpreter"

    def run(self, args):
        return interpret(self.graph, args)


class Backend:
    """A named backend: `compile(graph)` builds its Executable."""

    def __init__(self, name: str, executable: type[Executable]) -> None:
        self.name = name
        self.executable = executable

    def compile(self, graph: Graph, passes: "PendingPasses | None" = None) -> Executable:
        """Build the executable of `graph`; with `passes`, graph is as traced and the passes
        that optimize it in place are left to the backend (see Executable.from_traced)."""
        if passes is None:
            return self.executable(graph)
        return self.executable.from_traced(graph, passes)


class PendingPasses:
    """The graph passes a traced graph still needs (optimization, verification), which rewrite
    it in place: run at most once, by whoever first needs the optimized graph (thread safe).
    A disk-cache hit needs no optimized graph to run, so these wait until something reads its
    instructions (`.lower()`, a gradient, TRACEJIT_DUMP)."""

    def __init__(self, graph: Graph, passes: Callable[[Graph], Graph],
                 text: Callable[[], str | None] | None = None) -> None:
        self.graph = graph
        self._passes: Callable[[Graph], Graph] | None = passes
        self._lock = threading.Lock()
        # where the passes also build the graph's instructions (runtime/grad_trace.py's shell
        # of a reverse-mode graph): an exact text of what it computes, for cache keys
        self.text = text

    @property
    def pending(self) -> bool:
        return self._passes is not None

    def __call__(self) -> Graph:
        if self._passes is not None:
            with self._lock:
                if self._passes is not None:
                    out = self._passes(self.graph)
                    assert out is self.graph, "the standard passes rewrite the graph in place"
                    self._passes = None
        return self.graph


_BACKENDS: dict[str, Backend] = {}
DEFAULT_BACKEND = "llvm"      # registered when the package is imported (llvmlite is required)


def register_backend(name: str, executable: type[Executable]) -> None:
    _BACKENDS[name] = Backend(name, executable)


register_backend("interpreter", InterpreterExecutable)


def get_backend(name: str | None = None) -> Backend:
    name = name or os.environ.get("TRACEJIT_BACKEND") or DEFAULT_BACKEND
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; available: {sorted(_BACKENDS)}") from None


def apply_view(arr, ops):
    """Apply a matmul operand's views (codegen.fusion.operand_view) to an array: each view
    primitive's own implementation from the registry (NumPy or CuPy: the calls dispatch by
    NEP 18), so a view op needs no branch here."""
    for name, p in ops:
        arr = P.get(name).impl(arr, **p)
    return arr
