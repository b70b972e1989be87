"""The package import graph runs one way (DESIGN.md, issue 11 item 4).

Every `import` and `from ... import` in tracejit/**.py, at module level or inside a function
(a lazy import that hides a cycle is still an arrow), is resolved to the module it names and
mapped to its area: the first package under tracejit (`tracer`, `ir`, ...) or the top-level
module (`devices`, `_version`, `transforms`, ...). The lower areas may only import what the
table below allows; the upper ones (nn, optim, amp, distributed, the public face) sit on top,
and no arrow between areas may close a cycle."""
from __future__ import annotations

import ast
import pathlib

import networkx as nx
import pytest

import tracejit

PKG = pathlib.Path(tracejit.__file__).parent

# what each lower area may import besides itself
ALLOWED = {
    "_version": set(),
    "ir": set(),
    "devices": {"ir"},                     # leaves below tracer and runtime
    "debug": set(),
    "codegen": {"ir"},
    "tracer": {"ir", "devices", "debug"},
    "runtime": {"codegen", "ir", "tracer", "devices", "debug", "_version"},
}
# on top: they may use any lower area, but nothing lower may use them
TOP = {"nn", "optim", "amp", "distributed", "autograd", "linalg", "serialization",
       "transforms", "<face>"}


def _module_name(path: pathlib.Path) -> str:
    parts = ["tracejit", *path.relative_to(PKG).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = pathlib.Path(*name.split(".")[1:])
    return (PKG / rel).with_suffix(".py").is_file() or (PKG / rel / "__init__.py").is_file()


def _targets(path: pathlib.Path, mod: str | None = None) -> list[tuple[str, int]]:
    """(module imported, line) for every tracejit import in the file (module `mod`), wherever
    in the file it is."""
    mod = mod or _module_name(path)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "tracejit"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[:len(pkg.split(".")) - (node.level - 1)]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            if base_name.split(".")[0] != "tracejit":
                continue
            for a in node.names:      # `from . import x` names a submodule, or an attribute
                sub = f"{base_name}.{a.name}"
                out.append((sub if _is_module(sub) else base_name, node.lineno))
    return out


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<face>"


def _arrows() -> list[tuple[str, str, str]]:
    """(area from, area to, where) for every import between two different areas."""
    arrows = []
    for path in sorted(PKG.rglob("*.py")):
        src = _module_name(path)
        for target, line in _targets(path):
            a, b = _area(src), _area(target)
            if a != b:
                arrows.append((a, b, f"{path.relative_to(PKG.parent)}:{line} imports {target}"))
    return arrows


def test_the_scanner_sees_lazy_and_relative_imports(tmp_path):
    # a function-level import counts; `from . import x` resolves to the submodule x
    f = PKG / "tracer" / "functional.py"
    targets = {t for t, _ in _targets(f)}
    assert "tracejit.tracer.ops" in targets and "tracejit.ir.core" in targets
    assert _area("tracejit.runtime.compile") == "runtime" and _area("tracejit") == "<face>"
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from ..runtime import compile\n    return compile\n")
    assert ("tracejit.runtime.compile", 2) in _targets(probe, "tracejit.tracer.probe")


def test_lower_areas_import_only_what_they_may():
    bad = [where for a, b, where in _arrows() if a in ALLOWED and b not in ALLOWED[a]]
    assert not bad, "arrows running back up:\n" + "\n".join(bad)


def test_every_area_is_known():
    # a new top-level module or package must be placed in the table above
    areas = {a for a, b, _ in _arrows()} | {b for a, b, _ in _arrows()}
    assert areas <= set(ALLOWED) | TOP, areas - set(ALLOWED) - TOP


def test_no_cycle_between_areas():
    g = nx.DiGraph()
    where = {}
    for a, b, w in _arrows():
        g.add_edge(a, b)
        where.setdefault((a, b), w)
    cycles = list(nx.simple_cycles(g))
    assert not cycles, "\n".join(
        " -> ".join(c + c[:1]) + ": " + "; ".join(where[(c[i], c[(i + 1) % len(c)])]
                                               for i in range(len(c))) for c in cycles)


@pytest.mark.parametrize("module", ["tracejit.devices", "tracejit.debug", "tracejit._version"])
def test_leaves(module):
    path = PKG / (module.split(".")[1] + ".py")
    assert {_area(t) for t, _ in _targets(path)} <= {"ir"}


def test_transforms_of_compiled_functions_are_chosen_above_the_tracer():
    # tracer.functional knows nothing of compiled functions (no duck-typed hook): given one, it
    # differentiates it eagerly; tj.grad, above both layers, returns a compiled gradient
    import numpy as np

    import tracejit as tj
    from tracejit.runtime.compile import CompiledFunction
    from tracejit.tracer import functional

    f = tj.compile(lambda x: (tj.tanh(x) * x).sum())
    x = np.linspace(-1, 1, 5).astype(np.float32)
    eager, compiled = functional.grad(f), tj.grad(f)
    assert not isinstance(eager, CompiledFunction) and isinstance(compiled, CompiledFunction)
    want = np.tanh(x) + x * (1 - np.tanh(x) ** 2)
    np.testing.assert_allclose(eager(x).numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(compiled(x).numpy(), want, rtol=1e-5)
    assert isinstance(tj.hessian(f), CompiledFunction)
