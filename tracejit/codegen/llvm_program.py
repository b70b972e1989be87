"""The LLVM program: everything codegen decides about running a graph on the CPU, as one artifact
(the CPU's counterpart of cuda_program.CudaProgram). The runtime only JITs its kernels, binds
buffers to its slots and runs its steps.

Buffers. The runtime keeps, per call, a table of 64-bit words (a frame): two header words, then
one word per slot holding `id(array)` of the NumPy array in that slot, the cheapest handle
Python has. Generated code finds an array's data pointer `data_offset` bytes into the array
object; `data_offset` is measured here, once per process, not assumed.

Kernels. Each distinct generated kernel is a module of its own, position independent:
`@tj_<hash>(ptr %frame, ptr %slots, i64 %begin, i64 %end)` reads the slot numbers of its
arguments from `%slots`, loads their data pointers and runs the kernel body over [begin, end)
of its parallel loop. Its symbol is a hash of its text, so the kernels of identical layers are
one module, compiled once per process and stored once on disk. They are also rendered once:
plan kernels with one structural key (codegen/kernel_key.py) share the first one's code, so a
deep model's code generation costs its distinct kernels, not its depth.

Steps. A run is a list of steps: `seg` (several kernel calls in one native call of the runner,
which walks a table of {function, slot list, begin, end} records), `par` (one large kernel
whose parallel range is split in chunks across threads), `matmul` (a BLAS call on two operand
views) and `extern` (a primitive's own implementation)."""
from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..ir.core import Value
from ..ir.prims_gamma import NAMES as GAMMA
from ..ir.prims_libm import NAMES as LIBM
from ..ir.printer import value_names
from .fusion import Kernel, Plan, operand_view
from .kernel_key import check_keys_enabled, kernel_key
from .llvm_ipow import ipow_library
from .llvm_lower import kernel_bodies, kernel_body
from .llvm_math import library
from .llvm_special import LIBM_DECLS, special_library
from .memplan import MemoryPlan, describe_plan, plan_memory

PARALLEL_MIN = 1 << 17    # elements a kernel needs before it is split across threads
SMALL_KERNEL = 1 << 15    # below this many elements, compile time matters more than vector code
# Every kernel module is built at O2 with the math library inlined (vectorizable). Measured
# here: O3 took 25% more LLVM time than O2 for nanoGPT's kernels and ran no faster; inlined
# tanh/exp in a 16K-element kernel ran 10x faster than libm calls for ~10 ms more compile
# time, and cost nothing measurable in an LSTM's tiny kernels.
SPEED_LEVEL = 2
# A tiny kernel is built without optimization and with LLVM's fast code generator: a scalar
# kernel (an optimizer's bias corrections, a loss's last division), or one whose elements times
# ops (a transcendental counting SLOW_OP) is at most TINY_KERNEL (an index check of 512 token
# ids). Its run time is a few microseconds either way, and O2 spent much of a cold compile on
# such kernels (nanoGPT small: 281 ms of 1.4 s LLVM CPU at O2, 24 ms at O0). A kernel of a few
# hundred elements with real work stays O2: an LSTM cell's [8, 32] gates at O0 made its
# compiled step 3x slower (the O0 budget below keeps them O2 now). Raised from 8192 to 32768:
# in nanoGPT small's AdamW step, an index check of 8x64 token ids and the updates of its
# 384- and 512-element parameters took ~110 ms of LLVM CPU at O2 (cold first call 7% less
# CPU), and its steps, makemore's, the LSTM's and the CNN's ran no slower (the budget held).
TINY_KERNEL = 32768
SLOW_OP = 16
# O0 code runs ~10x slower than O2's vector code (an index check of 512 ids: ~3 us vs 0.3), so
# a program's O0 kernels also stay within a budget: their work at most 1/O0_BUDGET of the
# program's estimated work, a GEMM flop counting MATMUL_OP of an element-op (BLAS at ~100
# GFLOP/s, vector loops at ~20 G element-ops/s) and the call itself CALL_WORK (~5 us): about
# 1% more run time at most. nanoGPT small's GEMMs leave room for its optimizer scalars and
# small AdamW updates; a makemore MLP's do not (all its tiny kernels at O0: a 7% longer step).
O0_BUDGET = 900
MATMUL_OP = 0.2
CALL_WORK = 100_000
_SLOW = frozenset({"exp", "log", "tanh", "erf", "erfc", "sin", "cos", "pow", "log1p", "expm1",
                   "atan2", *LIBM, *GAMMA})
HEADER = 2                # frame words before the slots: the only segment's call table, its length
CALL_WORDS = 4            # a call record: function, slot list, begin, end


@functools.lru_cache(maxsize=None)
def data_offset() -> int:
    """Where NumPy keeps an array's data pointer inside the array object (PyArrayObject.data,
    right after the object header in every NumPy so far), found by looking, so that generated
    code never reads a guessed field."""
    probes = [np.arange(3.0), np.zeros((2, 5), np.int32), np.empty(0, np.float32)]
    for off in range(8, 128, 8):
        if all(ctypes.c_void_p.from_address(id(a) + off).value == a.ctypes.data
               for a in probes if a.ctypes.data):
            return off
    raise RuntimeError("tracejit: cannot find the data pointer in NumPy's array objects; the "
                       "LLVM backend cannot run here (use backend='interpreter')")


@dataclass(frozen=True)
class KernelCode:
    """One distinct kernel: a complete LLVM module exporting `symbol`."""
    symbol: str
    text: str
    speed_level: int          # the LLVM pipeline's level (O2: SPEED_LEVEL)


@dataclass
class Call:
    """A kernel of the plan run through its (possibly shared) code."""
    kernel: str                   # the plan's name for it (k3)
    code: KernelCode
    slots: tuple[int, ...]        # frame slots of its arguments, in argument order
    extent: int                   # its parallel loop runs over [0, extent)


@dataclass
class Step:
    kind: str                                  # "seg" | "par" | "matmul" | "extern"
    calls: list[Call] = field(default_factory=list)        # seg: in order; par: the one
    chunks: list[tuple[int, int]] = field(default_factory=list)   # par: one per thread
    kernel: Kernel | None = None               # matmul / extern
    operands: list[tuple[int, list]] = field(default_factory=list)  # (slot, view ops)
    out: int = -1                              # matmul / extern: the result's slot


@dataclass
class LLVMProgram:
    plan: Plan
    slots: dict[Value, int]
    n_words: int                          # frame size: HEADER + slots
    inputs: list[int]                     # the graph inputs' slots, in order
    constants: list[tuple[int, Value]]    # shared by every frame (read only)
    temps: list[tuple[int, Value]]        # intermediates: per frame, kept between calls
    fresh: list[tuple[int, Value]]        # outputs written by kernels: new arrays per call
    out_plan: list[tuple[int, bool]]      # per graph output: its slot, and whether to copy it
    steps: list[Step]
    codes: dict[str, KernelCode]          # the distinct kernels, by symbol
    threads: int
    data_offset: int
    memory: MemoryPlan | None = None      # the intermediates' offsets in one scratch arena

    def calls(self) -> list[Call]:
        return [c for s in self.steps for c in s.calls]

    def llvm_text(self) -> str:
        """Every distinct kernel's module, each headed by the plan kernels it runs."""
        users: dict[str, list[str]] = {}
        for c in self.calls():
            users.setdefault(c.code.symbol, []).append(c.kernel)
        return "\n\n".join(f"; module {s} (O{code.speed_level}): kernels "
                           f"{', '.join(users.get(s, []))}\n{code.text}"
                           for s, code in self.codes.items())

    def describe_memory(self) -> str:
        """The memory plan of the intermediates (slots and steps as in describe())."""
        names = value_names(self.plan.graph)
        labels = {s: f"slot {s} %{names.get(v) or v.name or '?'} {v.aval}" for s, v in self.temps}
        nb = lambda v: math.prod(v.shape) * v.dtype.np.itemsize   # noqa: E731
        return describe_plan(self.memory, labels, sum(nb(v) for _, v in self.fresh),
                             sum(nb(v) for _, v in self.constants))

    def describe(self) -> str:
        names = value_names(self.plan.graph)
        n = lambda v: "%" + (names.get(v) or v.name or "?")   # noqa: E731
        by_slot = {s: v for v, s in self.slots.items()}

        def sl(s: int) -> str:
            return f"{s}:{n(by_slot[s])}"
        calls = self.calls()
        lines = [f"llvm program: {len(self.slots)} slots ({len(self.inputs)} inputs, "
                 f"{len(self.constants)} constants, {len(self.temps)} intermediates, "
                 f"{len(self.fresh)} new outputs per call), {len(self.steps)} steps, "
                 f"{len(calls)} kernel calls of {len(self.codes)} distinct kernels, "
                 f"{self.threads} threads; array data at byte {self.data_offset} of the "
                 f"array object"]
        kinds = (("input", self.inputs), ("constant", [s for s, _ in self.constants]),
                 ("intermediate", [s for s, _ in self.temps]),
                 ("output", [s for s, _ in self.fresh]))
        for what, ss in kinds:
            for s in ss:
                v = by_slot[s]
                lines.append(f"  slot {s} {n(v)}: {what} {v.aval}")
        for i, st in enumerate(self.steps):
            if st.kind == "seg":
                lines.append(f"step {i}: native segment of {len(st.calls)} calls")
                for c in st.calls:
                    lines.append(f"  {c.kernel} -> {c.code.symbol} O{c.code.speed_level} "
                                 f"over [0, {c.extent}) slots({', '.join(map(sl, c.slots))})")
            elif st.kind == "par":
                c = st.calls[0]
                lines.append(f"step {i}: {c.kernel} -> {c.code.symbol} O{c.code.speed_level} "
                             f"split across threads: "
                             f"{' '.join(f'[{a}, {b})' for a, b in st.chunks)} "
                             f"slots({', '.join(map(sl, c.slots))})")
            else:
                ops = ", ".join(sl(s) + "".join(f" {name}{list(p.get('perm', p.get('shape')))}"
                                                for name, p in view)
                                for s, view in st.operands)
                how = "BLAS matmul" if st.kind == "matmul" else \
                    f"extern {st.kernel.instr.prim.name}"
                lines.append(f"step {i}: {st.kernel.name} {how}({ops}) -> {sl(st.out)}")
        return "\n".join(lines)


# -- building it ------------------------------------------------------------------------------
def build_program(plan: Plan, threads: int, check_keys: bool | None = None) -> LLVMProgram:
    """The program of `plan` on `threads` threads. Kernels with one structural key
    (codegen.kernel_key) are rendered once; `check_keys` (default: TRACEJIT_CHECK_KERNEL_KEYS)
    renders every kernel and raises if two with one key differ."""
    g = plan.graph
    slots: dict[Value, int] = {}
    written = [v for k in plan.kernels for v in k.outputs]
    outs = set(g.outputs)
    order = list(g.inputs) + plan.constants
    order += [v for v in written if v not in outs] + [v for v in written if v in outs]
    for v in order:
        slots.setdefault(v, HEADER + len(slots))
    fresh = [(slots[v], v) for v in dict.fromkeys(written) if v in outs]
    temps = [(slots[v], v) for v in dict.fromkeys(written) if v not in outs]
    # an output that is an input, a constant or a repeated output is a copy
    new = {s for s, _ in fresh}
    out_plan, seen = [], set()
    for v in g.outputs:
        s = slots[v]
        out_plan.append((s, s not in new or s in seen))
        seen.add(s)
    codes: dict[str, KernelCode] = {}
    levels = kernel_levels(plan)
    check = check_keys_enabled() if check_keys is None else check_keys
    built: dict[tuple, tuple | None] = {}
    steps: list[Step] = []
    seg: list[Call] = []
    for k in plan.kernels:
        if k.kind in ("matmul", "extern"):
            if seg:
                steps.append(Step("seg", seg))
                seg = []
            ins = k.instr
            views = [operand_view(v, slots) if k.kind == "matmul" else (v, [])
                     for v in ins.inputs]
            steps.append(Step(k.kind, kernel=k, out=slots[ins.out],
                              operands=[(slots[b], ops) for b, ops in views]))
            continue
        parts, scratch = _shared_codes(k, levels[k.name], built, check)
        for v in scratch:             # partial results of a split reduction: per frame
            slots.setdefault(v, HEADER + len(slots))
            temps.append((slots[v], v))
        for code, args, extent in parts:
            code = codes.setdefault(code.symbol, code)
            call = Call(k.name, code, tuple(slots[v] for v in args), extent)
            big = threads > 1 and k.kind in ("loop", "reduce", "rows") and \
                math.prod(k.shape) >= PARALLEL_MIN and call.extent >= 2
            if big:
                if seg:
                    steps.append(Step("seg", seg))
                    seg = []
                t = min(threads, call.extent)
                bounds = [call.extent * i // t for i in range(t + 1)]
                steps.append(Step("par", [call], chunks=list(zip(bounds[:-1], bounds[1:]))))
            else:
                seg.append(call)
    if seg:
        steps.append(Step("seg", seg))
    return LLVMProgram(plan, slots, HEADER + max(len(slots), 1), [slots[v] for v in g.inputs],
                       [(slots[v], v) for v in plan.constants], temps, fresh, out_plan, steps,
                       codes, threads, data_offset(), plan_temps(temps, steps))


def step_slots(steps: list[Step]) -> list[list[int]]:
    """The slots each kernel call, matmul or extern call touches, in run order."""
    out: list[list[int]] = []
    for st in steps:
        if st.kind in ("seg", "par"):
            out += [list(c.slots) for c in st.calls]
        else:
            out.append([s for s, _ in st.operands] + [st.out])
    return out


def plan_temps(temps: list[tuple[int, Value]], steps: list[Step],
               share: bool | None = None) -> MemoryPlan:
    """The intermediates' memory plan, by slot (codegen.memplan)."""
    sizes = {s: math.prod(v.shape) * v.dtype.np.itemsize for s, v in temps}
    return plan_memory(sizes, step_slots(steps), share)


def kernel_codes(k: Kernel, level: int | None = None
                 ) -> tuple[list[tuple[KernelCode, list[Value], int]], list[Value]]:
    """The modules of the loop kernels that run plan kernel k (usually one; a split reduction
    has a partial-sum kernel and a finishing one), each with the values its arguments hold and
    the extent of its parallel range, and the scratch buffers between them."""
    small = math.prod(k.shape) < SMALL_KERNEL
    level = speed_level(k) if level is None else level
    parts, scratch = kernel_bodies(k, small)
    out = []
    for args, body, extent, md in parts:
        out.append((_code(_module(body, md, len(args), inline=True), level), args, extent))
    return out, scratch


def _shared_codes(k: Kernel, level: int, built: dict[tuple, tuple | None], check: bool
                  ) -> tuple[list[tuple[KernelCode, list[Value], int]], list[Value]]:
    """kernel_codes(k, level), rendered only for the first kernel of each structural key
    (kernel_key) in `built`: a later one takes that code, with its own values in the argument
    positions (the key numbers them) and new scratch buffers of the same types."""
    kk = kernel_key(k)
    if kk is None:
        return kernel_codes(k, level)
    key, vals = kk
    key = (level, key)
    hit = built.get(key)
    if hit is None or check:
        parts, scratch = kernel_codes(k, level)
        pos = {v: i for i, v in enumerate(vals)}
        pos.update({v: -1 - j for j, v in enumerate(scratch)})   # scratch: negative numbers
        if any(a not in pos for _, args, _ in parts for a in args):
            built[key] = None       # an argument the key does not reach: never shared
            return parts, scratch   # (unreachable while args are the kernel's inputs/outputs)
        mine = ([(code, [pos[a] for a in args], extent) for code, args, extent in parts],
                [v.aval for v in scratch])
        if key not in built:
            built[key] = mine
        elif hit is not None and _summary(hit) != _summary(mine):
            raise RuntimeError(f"tracejit internal error: kernel {k.name} has the structural "
                               f"key of an earlier kernel but other code "
                               f"({_summary(hit)} vs {_summary(mine)}); please report this "
                               f"graph (TRACEJIT_CHECK_KERNEL_KEYS)")
        return parts, scratch
    shared, avals = hit
    scratch = [Value(a, None, name=f"{k.name}_partials") for a in avals]
    return [(code, [vals[i] if i >= 0 else scratch[-1 - i] for i in refs], extent)
            for code, refs, extent in shared], scratch


def _summary(built: tuple) -> list:
    """What a kernel's code must agree on within one key: module symbols (hashes of the
    text), argument numbers, extents and scratch types."""
    shared, avals = built
    return [(c.symbol, refs, extent) for c, refs, extent in shared] + [str(a) for a in avals]


def work(k: Kernel) -> float:
    """Kernel k's estimated work in element-ops (a transcendental op counting SLOW_OP, a
    concatenation its pieces; a matmul its flops times MATMUL_OP)."""
    if k.kind == "matmul":
        a = k.instr.inputs[0]
        return 2.0 * math.prod(k.instr.out.shape) * (a.shape[-1] if a.shape else 1) * MATMUL_OP
    ops = sum(SLOW_OP if op.prim.name in _SLOW else
              len(op.inputs) if op.prim.name == "concatenate" else 1 for op in k.ops)
    return float(math.prod(k.shape) * max(ops, 1))


def speed_level(k: Kernel) -> int:
    """The LLVM level of kernel k's modules on its own: 0 for a tiny kernel (see TINY_KERNEL),
    else O2 (kernel_levels also holds a program's O0 kernels to its budget)."""
    return 0 if math.prod(k.shape) == 1 or work(k) <= TINY_KERNEL else SPEED_LEVEL


def kernel_levels(plan: Plan) -> dict[str, int]:
    """The level of each generated kernel of the plan, by name: the tiny ones at O0, smallest
    work first, while their work stays within 1/O0_BUDGET of the plan's (see O0_BUDGET)."""
    gen = [k for k in plan.kernels if k.kind not in ("matmul", "extern")]
    budget = (CALL_WORK + sum(work(k) for k in plan.kernels if k.kind != "extern")) / O0_BUDGET
    levels = {k.name: SPEED_LEVEL for k in gen}
    for k in sorted((k for k in gen if speed_level(k) == 0), key=work):
        if work(k) > budget:
            break
        budget -= work(k)
        levels[k.name] = 0
    return levels


def _code(text: str, level: int) -> KernelCode:
    """The module `text` (its entry still @KERNEL) built at `level`, named by both: the same
    loops built at two levels (a kernel called on 128 and on 4096 elements) are two modules."""
    symbol = "tj_" + hashlib.sha256(f"O{level}\n{text}".encode()).hexdigest()[:32]
    return KernelCode(symbol, text.replace("@KERNEL(", f"@{symbol}("), level)


def kernel_code(k: Kernel) -> tuple[KernelCode, list[Value]]:
    """The module of one kernel and the values its arguments hold (kernel_codes, for a kernel
    that is one loop kernel)."""
    small = math.prod(k.shape) < SMALL_KERNEL
    md: list[str] | None = None if small else []
    args, body = kernel_body(k, "body", md)
    return _code(_module(body, md or [], len(args), inline=True), speed_level(k)), args


def _module(body: str, md: list[str], n_args: int, inline: bool) -> str:
    wrapper = ["define void @KERNEL(ptr %frame, ptr %slots, i64 %begin, i64 %end) {"]
    off = data_offset()
    for i in range(n_args):
        # frame word slots[i] holds an array object; its data pointer sits `off` bytes in
        wrapper += [f"  %s{i}p = getelementptr i64, ptr %slots, i64 {i}",
                    f"  %s{i} = load i64, ptr %s{i}p",
                    f"  %o{i}p = getelementptr ptr, ptr %frame, i64 %s{i}",
                    f"  %o{i} = load ptr, ptr %o{i}p",
                    f"  %d{i} = getelementptr i8, ptr %o{i}, i64 {off}",
                    f"  %p{i} = load ptr, ptr %d{i}"]
    args = ", ".join(f"ptr %p{i}" for i in range(n_args))
    # The call stays a call: inlined, the body's loops went through LLVM's function
    # simplification twice (in @body, then again in the wrapper), 14% of an O2 module's LLVM
    # time (nanoGPT small's 31 O2 modules: 1131 -> 976 ms CPU); the call costs nanoseconds
    # per kernel call, and @body is the same optimized code either way.
    wrapper += [f"  call void @body({args}, i64 %begin, i64 %end) #0", "  ret void", "}",
                "attributes #0 = { noinline }"]
    code = body + "\n\n" + "\n".join(wrapper)
    parts = [_prelude(code, inline), code]
    if md:
        parts.append("\n".join(md))
    return "\n\n".join(parts) + "\n"


_NAME = re.compile(r"@([A-Za-z_][\w.]*)")


@functools.lru_cache(maxsize=None)
def _library_parts(inline: bool) -> tuple[str, dict[str, str]]:
    """The math prelude as (declarations, {name: definition}) so that a module takes only the
    functions it calls (parsing the whole library per kernel would cost more than the kernel)."""
    text = "\n\n".join([library(inline), special_library(inline), ipow_library(),
                        "declare i64 @llvm.smax.i64(i64, i64)\n"
                        "declare i64 @llvm.smin.i64(i64, i64)"])
    decls, defs, cur = [], {}, None
    for ln in text.splitlines():
        if cur is not None:
            defs[cur].append(ln)
            if ln == "}":
                cur = None
        elif ln.startswith("declare"):
            decls.append(ln)
        elif ln.startswith("define"):
            cur = _NAME.search(ln).group(1)
            defs[cur] = [ln]
        elif ln.startswith("@"):
            defs[_NAME.match(ln).group(1)] = [ln]
    return "\n".join(dict.fromkeys(decls)), {k: "\n".join(v) for k, v in defs.items()}


def _prelude(code: str, inline: bool) -> str:
    decls, defs = _library_parts(inline)
    need: list[str] = []
    called = _NAME.findall(code)
    libm = [LIBM_DECLS[m] for m in dict.fromkeys(called) if m in LIBM_DECLS]
    if libm:
        decls = "\n".join([decls, *libm])
    todo = [m for m in called if m in defs]
    while todo:
        name = todo.pop()
        if name in need:
            continue
        need.append(name)
        todo += [m for m in _NAME.findall(defs[name]) if m in defs and m not in need]
    return "\n\n".join([decls] + [defs[name] for name in sorted(need)])


# -- the runner -------------------------------------------------------------------------------
RUNNER_TEXT = f"""define void @tj_run_calls(ptr %frame, ptr %calls, i64 %n) {{
entry:
  br label %head
head:
  %i = phi i64 [0, %entry], [%next, %body]
  %more = icmp slt i64 %i, %n
  br i1 %more, label %body, label %done
body:
  %rec = mul i64 %i, {CALL_WORDS}
  %fp = getelementptr i64, ptr %calls, i64 %rec
  %fn = load ptr, ptr %fp
  %sp = getelementptr i64, ptr %fp, i64 1
  %slots = load ptr, ptr %sp
  %bp = getelementptr i64, ptr %fp, i64 2
  %begin = load i64, ptr %bp
  %ep = getelementptr i64, ptr %fp, i64 3
  %end = load i64, ptr %ep
  call void %fn(ptr %frame, ptr %slots, i64 %begin, i64 %end)
  %next = add i64 %i, 1
  br label %head
done:
  ret void
}}

define void @tj_run(ptr %frame) {{
  %calls = load ptr, ptr %frame
  %np = getelementptr i64, ptr %frame, i64 1
  %n = load i64, ptr %np
  call void @tj_run_calls(ptr %frame, ptr %calls, i64 %n)
  ret void
}}
"""
RUNNER = KernelCode("tj_run", RUNNER_TEXT, 0)
"""`tj_run(frame)` runs the call table whose address and length are the frame's header words;
`tj_run_calls(frame, calls, n)` runs any call table against a frame. The same for every
program: the runtime builds it once per process."""


__all__ = ["LLVMProgram", "KernelCode", "Call", "Step", "build_program", "data_offset",
           "RUNNER", "HEADER", "CALL_WORDS"]
