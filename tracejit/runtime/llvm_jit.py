"""llvmlite plumbing: the host target machine, O3, JIT engines, object code, and the
process-wide registry of compiled kernels.

A kernel (codegen.llvm_program.KernelCode) is compiled once per process however many graphs
use it: `jit_kernels` finds it in memory (held alive by the executables that use it), else in
the disk cache, else compiles it. An executable found whole in the disk cache (exe_cache)
names its kernels by symbol and cache key, without their text: `load_kernels` finds those in
memory or on disk, or reports a miss. `kernel_counts()` says how often each happened."""
from __future__ import annotations

import ctypes
import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
import weakref
from typing import Iterable

import llvmlite.binding as llvm
from llvmlite.binding import ffi

from ..codegen.llvm_program import RUNNER, KernelCode
from . import cache

_lock = threading.Lock()
_state: dict = {}


def _new_target_machine(opt: int = 3):
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=_state["cpu"], features=_state["features"], opt=opt,
                                        reloc="static", codemodel="jitdefault")


def codegen_level(speed_level: int) -> int:
    """The code generator's level for a module optimized at `speed_level`: a module built
    without optimization (a tiny kernel, codegen.llvm_program.TINY_KERNEL) also gets the fast
    instruction selector and register allocator, which is where most of its compile time went
    (a scalar AdamW bias-correction kernel: 80 ms at O2, 9 ms at O0); everything else O3."""
    return 0 if speed_level == 0 else 3


def _machine_for(speed_level: int):
    """This process's shared TargetMachine for the code of modules of `speed_level`."""
    tm = target_machine()
    level = codegen_level(speed_level)
    if level == 3:
        return tm
    with _lock:
        key = f"tm{level}"
        if key not in _state:
            _state[key] = _new_target_machine(level)
        return _state[key]


def target_machine():
    """The TargetMachine for this CPU (its name and features, so loops use AVX2/AVX-512),
    used for optimization and code generation only."""
    with _lock:
        if "tm" not in _state:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            _state["cpu"] = llvm.get_host_cpu_name()
            _state["features"] = llvm.get_host_cpu_features().flatten()
            _state["tm"] = _new_target_machine()
        return _state["tm"]


def target_id() -> str:
    target_machine()
    return f"{llvm.get_default_triple()}|{_state['cpu']}|{_state['features']}"


def optimize(text: str, speed_level: int = 3, tm=None, unlocked: bool = False):
    """Parse and run the optimization pipeline (O3, or O2 for fast compiles). With `unlocked`
    (compile threads: their own TargetMachine `tm`), the module lives in a context of its own
    and the pipeline runs outside llvmlite's global lock (see `_unlocked`)."""
    tm = tm or target_machine()
    mod = llvm.parse_assembly(text, context=llvm.create_context() if unlocked else None)
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=speed_level)
    pb = llvm.create_pass_builder(tm, pto)
    mpm = pb.getModulePassManager()
    if unlocked:
        _RAW.LLVMPY_RunNewModulePassManager(mpm, mod, pb)
    else:
        mpm.run(mod, pb)
    return mod


def assembly(mod, speed_level: int = 2) -> str:
    """The assembly of `mod` as the module's level builds it (see `codegen_level`)."""
    return _machine_for(speed_level).emit_assembly(mod)


def object_code(mod, tm=None, unlocked: bool = False) -> bytes:
    tm = tm or target_machine()
    if not unlocked:
        return tm.emit_object(mod)
    with ffi.OutputString() as err:
        buf = _RAW.LLVMPY_TargetMachineEmitToMemory(tm, mod, 1, err)
        if not buf:
            raise RuntimeError(str(err))
    try:
        return ctypes.string_at(ffi.lib.LLVMPY_GetBufferStart(buf), ffi.lib.LLVMPY_GetBufferSize(buf))
    finally:
        ffi.lib.LLVMPY_DisposeMemoryBuffer(buf)


# llvmlite runs every call into LLVM under one process-wide lock (ffi.lib wraps each function),
# so compile threads that go through its API take turns: measured, two threads compiled no
# faster than one. The two calls that take the time, the optimization pipeline and code
# generation, are made here on llvmlite's underlying ctypes functions instead, which release
# the GIL and take no lock; each thread has its own TargetMachine and each module its own
# LLVMContext, which is what LLVM needs to compile concurrently. Everything else (parsing,
# building the pipeline, engines) still goes through the lock.
_RAW = getattr(ffi.lib, "_lib", None)
if _RAW is not None and not all(hasattr(_RAW, f) for f in (
        "LLVMPY_RunNewModulePassManager", "LLVMPY_TargetMachineEmitToMemory")):
    _RAW = None


def compile_threads() -> int:
    """Threads that compile kernels (TRACEJIT_COMPILE_THREADS; default: one per CPU); 1 where
    llvmlite's internals are not as expected."""
    if _RAW is None:
        return 1
    n = os.environ.get("TRACEJIT_COMPILE_THREADS")
    return max(int(n), 1) if n else (os.cpu_count() or 1)


class Engine:
    """Holds JIT-compiled code alive and resolves function addresses."""

    def __init__(self, mod=None, obj: bytes | None = None, objs: Iterable[bytes] = ()) -> None:
        target_machine()
        tm = _new_target_machine()      # an engine takes ownership of its TargetMachine
        if mod is None:
            mod = llvm.parse_assembly("")
            self.ee = llvm.create_mcjit_compiler(mod, tm)
            for o in ([obj] if obj is not None else []) + list(objs):
                _check_symbols(o)
                self.ee.add_object_file(llvm.ObjectFileRef.from_data(o))
        else:
            self.ee = llvm.create_mcjit_compiler(mod, tm)
        self.ee.finalize_object()

    def address(self, name: str) -> int:
        addr = self.ee.get_function_address(name)
        if not addr:
            raise RuntimeError(f"JIT: function {name} not found")
        return addr


def undefined_symbols(obj: bytes) -> list[str]:
    """Names an ELF64 object file imports (its undefined symbols); [] for other formats."""
    if obj[:5] != b"\x7fELF\x02" or obj[5] != 1:        # 64-bit little-endian ELF only
        return []
    shoff, = struct.unpack_from("<Q", obj, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * shentsize)
                for i in range(shnum)]
    names = []
    for _, sh_type, _, _, off, size, link, _, _, entsize in sections:
        if sh_type != 2 or not entsize:                   # SHT_SYMTAB
            continue
        stroff = sections[link][4]
        for at in range(off, off + size, entsize):
            name, _, _, shndx = struct.unpack_from("<IBBH", obj, at)
            if shndx == 0 and name:                       # SHN_UNDEF
                end = obj.index(b"\0", stroff + name)
                names.append(obj[stroff + name:end].decode())
    return names


def _check_symbols(obj: bytes) -> None:
    """Refuse object code that calls a function this process lacks: MCJIT would jump to
    address 0 (a compiler-runtime helper such as __truncdfhf2 is the usual culprit)."""
    missing = [n for n in undefined_symbols(obj)
               if n != "_GLOBAL_OFFSET_TABLE_" and not llvm.address_of_symbol(n)]
    if missing:
        raise RuntimeError(f"tracejit internal error: generated code calls {', '.join(missing)}, "
                           f"which this process does not provide; please report this graph")


# -- the kernel registry ------------------------------------------------------------------------
class JitKernel:
    """A compiled kernel: its entry address, its disk-cache key, and the engine holding its
    code (shared with the kernels compiled or loaded together with it) alive as long as this
    object lives."""

    __slots__ = ("symbol", "key", "engine", "address", "__weakref__")

    def __init__(self, symbol: str, key: str, engine: Engine) -> None:
        self.symbol, self.key, self.engine = symbol, key, engine
        self.address = engine.address(symbol)


_kernels: "weakref.WeakValueDictionary[str, JitKernel]" = weakref.WeakValueDictionary()
_counts = {"compiled": 0, "loaded": 0, "reused": 0}
_registry_lock = threading.Lock()


def kernel_counts() -> dict[str, int]:
    """How many kernel modules this process compiled, loaded from the disk cache, and found
    already in memory (another graph, or an earlier call of this one, uses the same kernel)."""
    with _registry_lock:
        return dict(_counts)


def cache_key(code: KernelCode) -> str:
    return cache.key(f"O{code.speed_level}\n{code.text}", target_id())


def compile_code(code: KernelCode, tm=None, unlocked: bool = False) -> bytes:
    """Object code for one kernel module (no caches). `tm`: a compile thread's own
    TargetMachine for the module's codegen level (see `codegen_level`)."""
    if tm is None:
        tm = _machine_for(code.speed_level)
    return object_code(optimize(code.text, code.speed_level, tm, unlocked), tm, unlocked)


def _compile_all(todo: list[KernelCode]) -> list[bytes]:
    """Object code for each kernel, in order; independent kernels compile in parallel threads
    (each with its own TargetMachine)."""
    n = min(compile_threads(), len(todo))
    if n <= 1:
        return [compile_code(c) for c in todo]
    target_machine()
    local = threading.local()

    def one(c: KernelCode) -> bytes:
        level = codegen_level(c.speed_level)
        if not hasattr(local, "tms"):
            local.tms = {}
        if level not in local.tms:
            local.tms[level] = _new_target_machine(level)
        return compile_code(c, local.tms[level], unlocked=True)
    # the largest first, so that no thread is left with a big one at the end
    order = sorted(range(len(todo)), key=lambda i: -len(todo[i].text))
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="tracejit-compile") as pool:
        done = dict(zip(order, pool.map(one, [todo[i] for i in order])))
    return [done[i] for i in range(len(todo))]


def runner() -> Engine:
    """The engine holding codegen.llvm_program's runner (tj_run, tj_run_calls): a few dozen
    instructions, built once per process (its object code from the disk cache, like a
    kernel's: compiling it took ~10 ms of a cached first call), kept for the process."""
    with _registry_lock:
        if "runner" not in _state:
            k = cache_key(RUNNER)
            obj = cache.load_entry(k, cache.RUNNER_EXT)
            if obj is None:
                obj = compile_code(RUNNER)
                cache.store_entry(k, obj, cache.RUNNER_EXT)
            _state["runner"] = Engine(objs=[obj])
        return _state["runner"]


def jit_kernels(codes: Iterable[KernelCode]) -> dict[str, JitKernel]:
    """The compiled kernels for `codes`, by symbol: from memory, the disk cache, or compiled
    now. Kernels new to this process are loaded into one engine together."""
    codes = list({c.symbol: c for c in codes}.values())
    found: dict[str, JitKernel] = {}
    with _registry_lock:
        for c in codes:
            k = _kernels.get(c.symbol)
            if k is not None:
                found[c.symbol] = k
                _counts["reused"] += 1
    todo = [c for c in codes if c.symbol not in found]
    if not todo:
        return found
    keys = [cache_key(c) for c in todo]
    objs = [cache.load(k) for k in keys]
    missing = [i for i, o in enumerate(objs) if o is None]
    for i, obj in zip(missing, _compile_all([todo[i] for i in missing])):
        cache.store(keys[i], obj)
        objs[i] = obj
    with _registry_lock:
        _counts["compiled"] += len(missing)
        _counts["loaded"] += len(todo) - len(missing)
    return _register(found, [c.symbol for c in todo], keys, objs)


def _register(found: dict[str, JitKernel], symbols: list[str], keys: list[str],
              objs: list[bytes]) -> dict[str, JitKernel]:
    """Load `objs` (the object code of kernels `symbols`) into one engine and register them."""
    engine = Engine(objs=objs)
    with _registry_lock:
        for sym, key in zip(symbols, keys):
            k = _kernels.get(sym)             # another thread may have made it meanwhile
            if k is None:
                k = JitKernel(sym, key, engine)
                _kernels[sym] = k
            found[sym] = k
    return found


def load_kernels(keys: dict[str, str]) -> dict[str, JitKernel] | None:
    """The kernels {symbol: disk-cache key} of a cached executable (runtime.exe_cache), from
    memory or the disk cache; None if any is in neither (evicted, damaged, untrusted): then
    the caller compiles the graph as if nothing were cached."""
    found: dict[str, JitKernel] = {}
    with _registry_lock:
        for sym in keys:
            k = _kernels.get(sym)
            if k is not None:
                found[sym] = k
    todo = [sym for sym in keys if sym not in found]
    objs = []
    for sym in todo:
        obj = cache.load(keys[sym])
        if obj is None:
            return None
        objs.append(obj)
    with _registry_lock:
        _counts["reused"] += len(found)
        _counts["loaded"] += len(todo)
    if not todo:
        return found
    return _register(found, todo, [keys[s] for s in todo], objs)
