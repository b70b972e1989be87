"""llvmlite plumbing: the host target machine, O3, JIT engines, object code, and the
process-wide registry of compiled kernels.

A kernel (codegen.llvm_program.KernelCode) is compiled once per process however many graphs
use it: `jit_kernels` finds it in memory (held alive by the executables that use it), else in
the disk cache, else compiles it. `kernel_counts()` says how often each happened."""
from __future__ import annotations

import struct
import threading
import weakref
from typing import Iterable

import llvmlite.binding as llvm

from ..codegen.llvm_program import RUNNER, KernelCode
from . import cache

_lock = threading.Lock()
_state: dict = {}


def _new_target_machine():
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=_state["cpu"], features=_state["features"], opt=3,
                                        reloc="static", codemodel="jitdefault")


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


def optimize(text: str, speed_level: int = 3):
    """Parse and run the optimization pipeline (O3, or O2 for fast compiles)."""
    tm = target_machine()
    mod = llvm.parse_assembly(text)
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=speed_level)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


def assembly(mod) -> str:
    return target_machine().emit_assembly(mod)


def object_code(mod) -> bytes:
    return target_machine().emit_object(mod)


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
    """A compiled kernel: its entry address, and the engine holding its code (shared with the
    kernels compiled or loaded together with it) alive as long as this object lives."""

    __slots__ = ("code", "engine", "address", "__weakref__")

    def __init__(self, code: KernelCode, engine: Engine) -> None:
        self.code, self.engine = code, engine
        self.address = engine.address(code.symbol)


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


def compile_code(code: KernelCode) -> bytes:
    """Object code for one kernel module (no caches)."""
    return object_code(optimize(code.text, code.speed_level))


def runner() -> Engine:
    """The engine holding codegen.llvm_program's runner (tj_run, tj_run_calls): a few dozen
    instructions, compiled once per process straight from its text, kept for the process."""
    with _registry_lock:
        if "runner" not in _state:
            target_machine()
            mod = llvm.parse_assembly(RUNNER.text)
            mod.verify()
            _state["runner"] = Engine(mod=mod)
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
    objs = []
    for c in todo:
        key = cache_key(c)
        obj = cache.load(key)
        if obj is None:
            obj = compile_code(c)
            cache.store(key, obj)
            what = "compiled"
        else:
            what = "loaded"
        with _registry_lock:
            _counts[what] += 1
        objs.append(obj)
    engine = Engine(objs=objs)
    with _registry_lock:
        for c in todo:
            k = _kernels.get(c.symbol)        # another thread may have made it meanwhile
            if k is None:
                k = JitKernel(c, engine)
                _kernels[c.symbol] = k
            found[c.symbol] = k
    return found
