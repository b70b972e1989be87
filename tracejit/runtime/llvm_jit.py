"""llvmlite plumbing: the host target machine, O3, JIT engines, object code."""
from __future__ import annotations

import struct
import threading

import llvmlite.binding as llvm

_lock = threading.Lock()
_state: dict = {}


def _new_target_machine():
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=_state["cpu"], features=_state["features"], opt=3,
                                        reloc="pic", codemodel="jitdefault")


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

    def __init__(self, mod=None, obj: bytes | None = None) -> None:
        target_machine()
        tm = _new_target_machine()      # an engine takes ownership of its TargetMachine
        if mod is None:
            mod = llvm.parse_assembly("")
            self.ee = llvm.create_mcjit_compiler(mod, tm)
            _check_symbols(obj)
            self.ee.add_object_file(llvm.ObjectFileRef.from_data(obj))
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
