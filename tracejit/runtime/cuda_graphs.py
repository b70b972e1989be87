"""CUDA graphs for compiled calls with static shapes: `tj.compile(fn, mode="reduce-overhead")`
(torch.compile's spelling) on a CUDA device records the executable's launches into one CUDA
graph and replays it with one graph launch per call, instead of a Python-issued launch per
kernel and GEMM. Opt-in: it has not yet run on a GPU (only under the strict fake CuPy of the
tests), so the default mode keeps plain launches.

One recording per (device, stream, thread): a thread's replays are ordered on its stream, so
the static buffers of a recording are never used by two calls at once.

- First call of a recording: static buffers are allocated (inputs, outputs, the scratch arena,
  a cuBLAS workspace with a handle of our own), the launches run one by one on them (the
  warm-up: CUDA module, cuBLAS handle and workspace all exist before any capture, and this
  call's results come from it), then they are captured on a private stream. Nothing is
  allocated while capturing.
- Every call: arguments are brought into the graph's inputs (below), the graph is launched on
  the current stream, outputs are handed out (below).
- Inputs. An argument that is already a contiguous device array of the input's dtype (the
  parameters and optimizer state of a training step, updated in place so their addresses
  stay) is read where it is: the graph records its address. A later call that passes another
  address records the graph again, with that input then copied (so an input causes at most one
  extra recording). Everything else is copied into static buffers before each replay: host
  arrays and Python scalars (the learning rate, and the random generator's seed and offset, so
  dropout draws a new mask every step) are packed into one host-to-device copy, from a
  page-locked staging buffer of the recording's, asynchronous: an event recorded after it is
  waited for before the next call refills the buffer; other device arrays (non-contiguous
  views, other dtypes) get a device copy each.
- Outputs. A capture updated in place (a parameter, an optimizer moment: `write_back`) that
  the graph reads where it is gets its new value written into it by the graph itself, and
  that array is handed back, so the caller copies nothing. Where aliasing allows, the kernel
  that computes the new value writes it there directly (the kernel reads the old value only
  at the elements it writes, and no later launch reads it: _Recording._in_place; a
  nanoGPT-small AdamW step's 84 store copies go); otherwise by a device copy after every
  launch that reads it. Other outputs the caller copies away at once
  (`reuse_outputs`) are handed out in the static buffers. Every other output is copied out of
  them after the replay, all in one device copy into one new allocation (the outputs are views
  of it: one output kept alive keeps the others' bytes), so the results of step k are never
  overwritten by step k+1. An output that is an input is a copy, as with plain launches.
- GEMMs: cuBLAS directly (runtime/cuda_gemm.py) through our ctypes binding of the library
  (runtime/cublas_ctypes.py: CuPy 14's binding raises NotImplementedError for any cuBLAS call
  while a stream captures, and has no setWorkspace), on our handle set to the capturing stream; an
  operand cuBLAS cannot read as a view (a broadcast row) is copied by a recorded copy kernel
  into a buffer of the recording's, as gemm would copy it with an allocation.
- Not capturable (extern steps run through CuPy, float64/integer matmuls through
  cupy.matmul, TRACEJIT_PROFILE timing each launch, no loadable libcublas for the ctypes
  binding), or a capture that fails: a RuntimeWarning naming the reason, once per
  executable, and plain launches from then on.

Memory: each recording holds its buffers (inputs copied, outputs, the scratch arena) for the
executable's life, where plain launches take the scratch from CuPy's pool per call; the cuBLAS
workspaces (32 MiB) are kept per (device, stream, thread) for the process's life."""
from __future__ import annotations

import math
import threading
import warnings
import weakref
from typing import Any, Sequence

import numpy as np

from ..debug import log_enabled, log_recompile
from ..devices import cupy_module
from ..ir.core import user_location
from . import cuda_gemm
from .backend import apply_view, register_backend
from .cuda_backend import _EXTERN, CudaExecutable

_STORE = object()                # a step that stores a new value into a capture
ALIGN = 256                      # offsets of the buffers inside one allocation
WORKSPACE_BYTES = 32 << 20       # cuBLAS's recommended workspace on Hopper
# recordings kept per executable (one per device, stream and thread): threads that come and
# go must not pile up static buffers; the oldest is dropped (its thread records again)
MAX_RECORDINGS = 8


def _nbytes(v) -> int:
    return math.prod(v.shape) * v.dtype.np.itemsize


class _Arena:
    """Device buffers for `values`, laid out in one allocation at aligned offsets (in order:
    a prefix of them is one contiguous byte range)."""

    def __init__(self, cp: Any, values: Sequence) -> None:
        self.offsets: list[int] = []
        n = 0
        for v in values:
            self.offsets.append(n)
            n += -(-_nbytes(v) // ALIGN) * ALIGN
        self.nbytes = n
        self.mem = cp.empty(max(n, 1), np.uint8)
        self.views = {v: self.view(self.mem, v, off) for v, off in zip(values, self.offsets)}

    @staticmethod
    def view(mem: Any, v, off: int) -> Any:
        return mem[off:off + _nbytes(v)].view(v.dtype.np).reshape(v.shape)


def _contiguous(a: Any) -> bool:
    """C-contiguous by its strides (size-1 axes may have any stride)."""
    expect = a.itemsize
    for n, s in zip(reversed(a.shape), reversed(a.strides)):
        if n != 1 and s != expect:
            return False
        expect *= n
    return True


def _overlap(a: Any, b: Any) -> bool:
    """Whether two device arrays share bytes (by their address ranges)."""
    pa, pb = a.data.ptr, b.data.ptr
    return pa < pb + b.nbytes and pb < pa + a.nbytes


def _host_buffer(cp: Any, n: int) -> tuple[np.ndarray, Any]:
    """A staging buffer of n bytes in page-locked host memory (reused by every call of a
    recording), and that memory; pageable memory and None if CuPy cannot allocate it."""
    if n:
        try:
            mem = cp.cuda.alloc_pinned_memory(n)
            return np.frombuffer(mem, np.uint8, n), mem
        except Exception:           # (no pinned memory left: the copy is synchronous)
            pass
    return np.zeros(n, np.uint8), None


def _event(cp: Any) -> Any:
    try:
        return cp.cuda.Event(disable_timing=True)
    except Exception:
        return None


class _Workspace:
    """A cuBLAS handle and workspace per (device, stream, thread), shared by every recording
    replayed there: replays on one stream never overlap."""

    def __init__(self, cp: Any) -> None:
        self.buffer = cp.empty(WORKSPACE_BYTES, np.uint8)
        self.handle = cuda_gemm.graph_handle(cp, self.buffer)

    def set_stream(self, stream_ptr: int) -> None:
        cuda_gemm.set_stream(self.handle, stream_ptr, self.buffer)

    def __del__(self) -> None:
        try:
            cuda_gemm.destroy_handle(self.handle)
        except Exception:       # interpreter shutdown: the CUDA context may be gone
            pass


# per CuPy module (the tests' fake ones come and go; a handle of one is nothing to another)
_WORKSPACES: "weakref.WeakKeyDictionary[Any, dict[tuple, _Workspace]]" = \
    weakref.WeakKeyDictionary()
_WS_LOCK = threading.Lock()


def _workspace(cp: Any, key: tuple) -> _Workspace:
    with _WS_LOCK:
        mine = _WORKSPACES.setdefault(cp, {})
        ws = mine.get(key)
        if ws is None:
            ws = mine[key] = _Workspace(cp)
        return ws


class _Recording:
    """One CUDA graph of an executable: its static buffers and its launches, resolved."""

    def __init__(self, exe: "CudaGraphExecutable", cp: Any, bound, args: Sequence[Any],
                 copied: set[int], workspace: _Workspace | None) -> None:
        ins = exe.graph.inputs
        dev = cp.cuda.Device().id
        self.direct: dict[int, int] = {}      # input index -> the address the graph reads
        self.held: dict[int, Any] = {}        # input index -> the array recorded there
        host, dcopy = [], []
        for i, (v, a) in enumerate(zip(ins, args)):
            if i not in copied and exe.readable_in_place(cp, v, a, dev):
                self.direct[i] = a.data.ptr
                self.held[i] = a
            elif isinstance(a, cp.ndarray):
                dcopy.append(i)
            else:
                host.append(i)
        self.host, self.dcopy = host, dcopy
        self.inputs = _Arena(cp, [ins[i] for i in host + dcopy])
        self.dcopy_views = [(i, self.inputs.views[ins[i]]) for i in dcopy]
        self.host_bytes = (self.inputs.offsets[len(host) - 1] + _nbytes(ins[host[-1]])
                           if host else 0)
        self.staging, self._pinned = _host_buffer(cp, self.host_bytes)
        # set after each copy out of a pinned staging buffer, waited for before refilling it
        self.copied = _event(cp) if self._pinned is not None else None
        if self.copied is None:                 # no event to wait for: pageable after all
            self.staging, self._pinned = np.zeros(self.host_bytes, np.uint8), None
        self._pending = False
        self.host_views = [(i, _Arena.view(self.staging, ins[i], off))
                           for i, off in zip(host, self.inputs.offsets)]
        # outputs handed out in place first, then those copied out (one contiguous range)
        kept = [v for v in exe.fresh if v in exe.kept_values]
        out = [v for v in exe.fresh if v not in exe.kept_values]
        self.outputs = _Arena(cp, out + kept)
        self.out_copy = [(v, off) for v, off in zip(out, self.outputs.offsets)]
        self.out_bytes = (self.out_copy[-1][1] + _nbytes(out[-1])) if out else 0
        env: dict = dict(bound.constants)
        env.update((ins[i], args[i]) for i in self.direct)
        env.update(self.inputs.views)
        env.update(self.outputs.views)
        if exe.scratch_layout:
            self.scratch = cp.empty(max(exe.scratch_bytes, 1), np.uint8)
            for v, off, n, dtype, shape in exe.scratch_layout:
                env[v] = self.scratch[off:off + n].view(dtype).reshape(shape)
        self.env = env
        # where each output comes from: an argument read in place (copied, as the plain path
        # copies an output that is an input), a static buffer copied, or a fresh buffer
        where = {v: i for i, v in enumerate(ins)}
        self.sources = [("arg", where[v]) if copy and where.get(v) in self.direct else
                        ("copy", v) if copy else ("fresh", v) for v, copy in exe.out_plan]
        self.workspace = workspace
        # captures updated in place that their kernel can write where they are: no store
        handed = [args[x] for how, x in self.sources if how == "arg"]
        self.in_place = self._in_place(exe, bound, args, handed)
        for j, i in self.in_place:
            env[exe.out_plan[j][0]] = args[i]
            self.sources[j] = ("inplace", i)
        self.steps: list[tuple] = []
        self.problem: str | None = None
        for fn, a, b, c in bound.steps:
            if fn is _EXTERN:
                self.problem = f"'{a.prim.name}' runs through CuPy (an extern step)"
            elif fn is not None:
                self.steps.append((fn, a, b, tuple(env[v] for v in c)))
            else:
                (ra, va), (rb, vb) = a, b
                x, y, z = apply_view(env[ra], va), apply_view(env[rb], vb), env[c]
                self.problem = self.problem or cuda_gemm.capture_problem(x, y, z)
                # an operand cuBLAS cannot read as it is (a broadcast zero state): a copy
                # kernel into a buffer of the recording's, recorded before the GEMM
                x, y = (self._contiguous_copy(cp, o, z) for o in (x, y))
                self.steps.append((None, x, y, z))
        if self.problem is None and workspace is None and \
                any(fn is None for fn, *_ in self.steps):
            self.problem = "no cuBLAS workspace"
        # captures updated in place and read where they are: the graph ends by storing their
        # new values into them (after every launch that reads them), and hands them back.
        # Not one whose old value is an output ("arg": `old = p.clone(); p.add_(x)`): that copy
        # is taken after the replay, so the caller stores the new value after it, as plainly
        stored = {i for _, i in self.in_place}
        for j, i in exe.pairs:
            v, copy = exe.out_plan[j]
            if i in self.direct and i not in stored and not copy and v in exe.kept_values \
                    and ins[i].shape == v.shape and ins[i].dtype == v.dtype \
                    and not any(_overlap(args[i], a) for a in handed):
                stored.add(i)
                self.steps.append((_STORE, args[i], env[v], None))
                self.sources[j] = ("inplace", i)
        self.graph = None

    def _in_place(self, exe: "CudaGraphExecutable", bound, args: Sequence[Any],
                  handed: list) -> list[tuple[int, int]]:
        """The (output j, input i) write-backs whose new value the kernel computing it can
        write over the argument itself (instead of into a buffer copied there by a store
        after every launch): the kernel reads that input only at the elements it writes
        (cuda_backend.same_index_inputs); no launch after it reads, and it reads no other,
        argument that shares bytes with the argument; no output handed out as a copy of an
        argument, and no other argument written in place, shares them; aligned as the kernel
        reads it."""
        ins = exe.graph.inputs
        reads: list[set] = []
        writer: dict = {}
        for n, ((fn, a, b, c), ln) in enumerate(zip(bound.steps, exe.launches)):
            if fn is _EXTERN:
                reads.append(set(a.inputs))
                writer.setdefault(a.out, n)
            elif fn is None:
                reads.append({a[0], b[0]})
                writer.setdefault(c, n)
            else:
                written = ln[5]
                reads.append(set(c) - set(written))
                for v in written:
                    writer.setdefault(v, n)
        chosen: list[tuple[int, int]] = []
        targets: list[Any] = []
        for j, i in exe.pairs:
            v, copy = exe.out_plan[j]
            if i not in self.direct or copy or v not in exe.kept_values or \
                    ins[i] not in exe.same_index.get(v, ()) or v not in writer or \
                    any(v is exe.out_plan[k][0] for k, _ in chosen) or \
                    (v in exe.aligned and args[i].data.ptr % 16):
                continue
            mem, w = args[i], writer[v]
            shared = {ins[k] for k in self.direct if _overlap(args[k], mem)}   # ins[i] too
            if any(reads[n] & shared for n in range(w + 1, len(reads))) or \
                    (reads[w] & shared) - {ins[i]} or \
                    any(_overlap(mem, a) for a in handed + targets):
                continue
            chosen.append((j, i))
            targets.append(mem)
        return chosen

    def _contiguous_copy(self, cp: Any, x: Any, out: Any) -> Any:
        if x.size == 0 or cuda_gemm.takes_view(x, out):
            return x
        buf = cp.empty(x.shape, x.dtype)
        self.steps.append((_STORE, buf, x, None))
        return buf

    def matches(self, cp: Any, exe: "CudaGraphExecutable", args: Sequence[Any], dev: int,
                ) -> list[int]:
        """The inputs this recording cannot take as they come now: read in place but not at
        the recorded address, or copied from the host but now on the device, or the reverse
        (each copy is made its own way)."""
        ins, held = exe.graph.inputs, self.held
        moved = [i for i, ptr in self.direct.items()
                 if args[i] is not held[i] and
                 not (exe.readable_in_place(cp, ins[i], args[i], dev) and args[i].data.ptr == ptr)]
        nd = cp.ndarray
        moved += [i for i in self.host if isinstance(args[i], nd)]
        moved += [i for i in self.dcopy if not isinstance(args[i], nd)]
        return moved

    def load(self, args: Sequence[Any], stream: Any) -> None:
        """Copy this call's arguments into the static input buffers, on `stream` (the current
        one: an older CuPy's set() without a stream copies on the legacy default stream, which
        a non-blocking stream does not wait for). The host values go in one copy from a
        page-locked staging buffer, which the copy reads after set() has returned (the host
        does not wait for it): an event recorded after the copy is waited for before the next
        call refills the buffer (by then the copy has long run: it comes before the graph's
        launch on the stream). Without pinned memory the buffer is pageable, and a copy from
        it returns once the driver has staged it."""
        if self.host_bytes:
            if self._pending:
                self.copied.synchronize()
            for i, view in self.host_views:
                view[...] = np.asarray(args[i], view.dtype)
            self.inputs.mem[:self.host_bytes].set(self.staging, stream)
            if self.copied is not None:
                self.copied.record(stream)
                self._pending = True
        for i, view in self.dcopy_views:
            view[...] = args[i]

    def execute(self, cp: Any) -> None:
        """The launches one by one, on the current stream (the warm-up, and the capture)."""
        handle = self.workspace.handle if self.workspace is not None else None
        for fn, a, b, c in self.steps:
            if fn is None:
                cuda_gemm.gemm(cp, a, b, c, handle)
            elif fn is _STORE:
                a[...] = b                  # a device copy kernel
            else:
                fn(a, b, c)

    def capture(self, cp: Any) -> None:
        side = cp.cuda.Stream(non_blocking=True)   # the legacy default stream cannot capture
        if self.workspace is not None:
            self.workspace.set_stream(side.ptr)
        with side:
            side.begin_capture()
            try:
                self.execute(cp)
            except BaseException:
                try:
                    side.end_capture()
                except Exception:      # the capture was invalidated: nothing to keep
                    pass
                raise
            self.graph = side.end_capture()

    def results(self, args: Sequence[Any]) -> list[Any]:
        """The outputs of the work just enqueued: copied-out ones in one new allocation."""
        copies: dict = {}
        if self.out_bytes:
            mem = self.outputs.mem[:self.out_bytes].copy()
            copies = {v: _Arena.view(mem, v, off) for v, off in self.out_copy}
        res = []
        for how, x in self.sources:
            if how == "inplace":
                res.append(args[x])
            elif how == "arg":
                res.append(args[x].copy())
            elif how == "copy":
                res.append(self.env[x].copy())
            else:
                res.append(copies.get(x, self.env[x]))
        return res


class CudaGraphExecutable(CudaExecutable):
    """A CUDA executable that replays its launches from CUDA graphs (see the module's text)."""

    def __init__(self, graph, passes=None) -> None:
        super().__init__(graph, passes)
        self.kept_values: set = set()
        self.pairs: list[tuple[int, int]] = []
        self._recordings: dict[tuple, _Recording] = {}
        self._copied: dict[tuple, set[int]] = {}
        self._rec_lock = threading.Lock()
        self.plain_reason: str | None = None
        self.stats = {"captures": 0, "replays": 0, "warmups": 0}

    def reuse_outputs(self, indices: Sequence[int]) -> None:
        mine = set(indices)
        users = {v for j, (v, _) in enumerate(self.out_plan) if j not in mine}
        self.kept_values = {v for j, (v, copy) in enumerate(self.out_plan)
                            if j in mine and not copy and v not in users}

    def write_back(self, pairs: Sequence[tuple[int, int]]) -> None:
        self.pairs = list(pairs)

    def readable_in_place(self, cp: Any, v, a: Any, dev: int) -> bool:
        """Whether the graph can read argument `a` of input `v` where it is."""
        return isinstance(a, cp.ndarray) and a.dtype == v.dtype.np and \
            tuple(a.shape) == v.shape and a.device.id == dev and _contiguous(a) and \
            not (v in self.aligned and a.data.ptr % 16)

    def _fall_back(self, reason: str) -> None:
        if self.plain_reason is None:
            self.plain_reason = reason
            warnings.warn(f"tracejit: {self.graph.name} (called at {user_location()}): not "
                          f"replayed from a CUDA graph (mode='reduce-overhead'): {reason}; its "
                          f"launches run one by one", RuntimeWarning, stacklevel=4)

    def run(self, args: Sequence[Any]) -> list[Any]:
        if self.plain_reason is not None or self._prof_keys is not None:
            return super().run(args)
        cp = cupy_module()
        dev = cp.cuda.Device().id
        key = (dev, cp.cuda.get_current_stream().ptr, threading.get_ident())
        rec = self._recordings.get(key)
        if rec is not None:
            moved = rec.matches(cp, self, args, dev)
            if not moved:
                stream = cp.cuda.get_current_stream()
                rec.load(args, stream)
                rec.graph.launch(stream)
                self.stats["replays"] += 1
                return rec.results(args)
            with self._rec_lock:            # read from a copy from now on
                self._copied.setdefault(key, set()).update(moved)
            if log_enabled("recompiles"):
                ins = self.graph.inputs
                log_recompile(self.graph.name, "its CUDA graph is recorded again: input(s) " +
                              ", ".join(f"{i} ({ins[i].dtype.name}{list(ins[i].shape)})"
                                        for i in moved) +
                              " moved (a new address, or between host and device); they are "
                              "copied into the graph's own buffers from now on")
        return self._record(cp, key, args)

    def _record(self, cp: Any, key: tuple, args: Sequence[Any]) -> list[Any]:
        bound = self.bind(cp)
        ws = None
        if any(fn is None for fn, *_ in bound.steps):
            try:
                ws = _workspace(cp, key)
            except Exception as e:      # e.g. no libcublas found for the ctypes binding
                self._fall_back(f"no cuBLAS handle with a workspace of our own "
                                f"({type(e).__name__}: {e})")
                return super().run(args)
        with self._rec_lock:
            copied = set(self._copied.get(key, ()))
        rec = _Recording(self, cp, bound, args, copied, ws)
        if rec.problem is not None:
            self._fall_back(rec.problem)
            return super().run(args)
        with self._rec_lock:
            self._recordings.pop(key, None)
        stream = cp.cuda.get_current_stream()
        rec.load(args, stream)
        if ws is not None:
            ws.set_stream(stream.ptr)
        rec.execute(cp)                  # the warm-up: this call's results
        self.stats["warmups"] += 1
        out = rec.results(args)
        try:
            rec.capture(cp)
        except Exception as e:
            self._fall_back(f"the capture failed ({type(e).__name__}: {e})")
            return out
        self.stats["captures"] += 1
        with self._rec_lock:
            while len(self._recordings) >= MAX_RECORDINGS:
                old = next(iter(self._recordings))
                del self._recordings[old]
                self._copied.pop(old, None)
            self._recordings[key] = rec
        return out


register_backend("cuda_graphs", CudaGraphExecutable)
