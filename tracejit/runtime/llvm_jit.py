"""llvmlite plumbing: the host target machine, O3, JIT engines, object code."""
from __future__ import annotations

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
            self.ee.add_object_file(llvm.ObjectFileRef.from_data(obj))
        else:
            self.ee = llvm.create_mcjit_compiler(mod, tm)
        self.ee.finalize_object()

    def address(self, name: str) -> int:
        addr = self.ee.get_function_address(name)
        if not addr:
            raise RuntimeError(f"JIT: function {name} not found")
        return addr
