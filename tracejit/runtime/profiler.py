"""TRACEJIT_PROFILE=1: where a compiled function's time goes, kernel by kernel.

An executable built while the variable is set runs each kernel (and each extern call: BLAS,
cuBLAS, NumPy/CuPy) as a step of its own, timed from the host; on the GPU each step is followed
by a device synchronize, so its time is the kernel's. That costs a call (CPU) or a sync (GPU)
per kernel, so profiled runs are slower in total than plain ones: use the table for shares,
and plain runs for totals. Executables built without the variable carry no cost.

    TRACEJIT_PROFILE=1 python train.py
    >>> print(tracejit.runtime.profiler.table())
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

_lock = threading.Lock()


@dataclass
class Entry:
    graph: str
    kernel: str
    kind: str
    shape: str
    ops: str
    calls: int = 0
    seconds: float = 0.0
    samples: list = field(default_factory=list)      # every call's seconds

    @property
    def median(self) -> float:
        """The median call: robust against the odd call another process interrupted."""
        xs = sorted(self.samples)
        n = len(xs)
        return 0.0 if n == 0 else (xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2)


_entries: dict[tuple, Entry] = {}


def enabled() -> bool:
    return os.environ.get("TRACEJIT_PROFILE", "") not in ("", "0")


def key_for(graph: str, kernel) -> tuple:
    """The identity of a kernel in the table (graph name, kernel name, kind, shape, ops)."""
    shape = "x".join(map(str, kernel.shape)) or "scalar"
    names = list(dict.fromkeys(op.prim.name for op in kernel.ops))
    return (graph, kernel.name, kernel.kind, shape, ",".join(names))


def launch_key(graph: str, name: str, kind: str, kernel) -> tuple:
    """key_for a GPU launch (a kernel may take several launches, each timed on its own)."""
    if kernel is None:
        return (graph, name, kind, "?", "")
    k = key_for(graph, kernel)
    return (graph, name or k[1], kind if kind != "kernel" else k[2]) + k[3:]


def record(key: tuple, seconds: float) -> None:
    with _lock:
        e = _entries.get(key)
        if e is None:
            e = _entries[key] = Entry(*key)
        e.calls += 1
        e.seconds += seconds
        e.samples.append(seconds)


def reset() -> None:
    with _lock:
        _entries.clear()


def entries() -> list[Entry]:
    """Every kernel seen, most total time first."""
    with _lock:
        return sorted(_entries.values(), key=lambda e: -e.seconds)


def table(top: int = 25, ops_width: int = 60) -> str:
    """A markdown table of the kernels by time: each kernel's median call times its calls (a
    machine shared with other processes interrupts some calls; the median ignores those), its
    share of the sum of those, and its total."""
    es = sorted(entries(), key=lambda e: -e.median * e.calls)
    total = sum(e.median * e.calls for e in es) or 1.0
    lines = ["| kernel | kind | shape | ops | calls | median us/call | total ms | share |",
             "|---|---|---|---|---|---|---|---|"]
    for e in es[:top]:
        ops = e.ops if len(e.ops) <= ops_width else e.ops[:ops_width - 3] + "..."
        lines.append(f"| {e.graph}:{e.kernel} | {e.kind} | {e.shape} | {ops} | {e.calls} | "
                     f"{e.median * 1e6:.1f} | {e.seconds * 1e3:.2f} | "
                     f"{e.median * e.calls / total:.1%} |")
    if len(es) > top:
        rest = sum(e.median * e.calls for e in es[top:])
        lines.append(f"| ({len(es) - top} more) | | | | | | | {rest / total:.1%} |")
    return "\n".join(lines)
