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
TOP = {"nn", "optim", "amp", "distributed", "distributions", "autograd", "linalg",
       "serialization", "utils", "transforms", "func", "special", "<face>"}


def _module_name(path: pathlib.Path) -> str:
    parts = ["tracejit", *path.relative_to(PKG).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    rel = pathlib.Path(*name.split(".")[1:])
    return (PKG / rel).with_suffix(".py").is_file() or (PKG / rel / "__init__.py").is_file()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes under an `if TYPE_CHECKING:` block (imports for annotations only)."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and \
                node.test.id == "TYPE_CHECKING":
            inside |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return inside


def _targets(path: pathlib.Path, mod: str | None = None,
             skip_type_checking: bool = False) -> list[tuple[str, int]]:
    """(module imported, line) for every tracejit import in the file (module `mod`), wherever
    in the file it is."""
    mod = mod or _module_name(path)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = []
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_nodes(tree) if skip_type_checking else set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
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
        else:
            name = _named_by_string(node)
            if name is not None:
                out.append((name, node.lineno))
    return out


def _named_by_string(node: ast.AST) -> str | None:
    """The tracejit module an import by name reaches, a lazy import the statements above miss:
    `importlib.import_module("tracejit.x")`, `__import__("tracejit.x")`,
    `sys.modules["tracejit.x"]` or `sys.modules.get("tracejit.x")`."""
    arg = None
    if isinstance(node, ast.Call) and node.args:
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) \
            else ""
        on_modules = isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute) and \
            f.value.attr == "modules"
        if name in ("import_module", "__import__") or (name == "get" and on_modules):
            arg = node.args[0]
    elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and \
            node.value.attr == "modules":
        arg = node.slice
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and \
            arg.value.split(".")[0] == "tracejit":
        return arg.value
    return None


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


def test_the_scanner_sees_imports_by_name(tmp_path):
    # a module fetched by its name at run time is an import too
    probe = tmp_path / "probe.py"
    probe.write_text("import importlib, sys\n"
                     "def f():\n    return importlib.import_module('tracejit.runtime.compile')\n"
                     "def g():\n    return sys.modules['tracejit.nn.module']\n"
                     "def h():\n    return sys.modules.get('tracejit.optim')\n"
                     "def i():\n    return __import__('tracejit.distributed')\n"
                     "def j():\n    return importlib.import_module('cupy.cuda.nvrtc')\n")
    targets = sorted(_targets(probe, "tracejit.ir.probe"), key=lambda t: t[1])
    assert targets == [("tracejit.runtime.compile", 3), ("tracejit.nn.module", 5),
                       ("tracejit.optim", 7), ("tracejit.distributed", 9)]


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


# -- inside the tracer: Tensor's methods are its class's, and no module cycle ------------------
TENSOR_CLASSES = {"Tensor", "TensorBase"}


def _attribute_writes(tree: ast.AST) -> list[tuple[str, int]]:
    """(what, line) for every write of an attribute onto a Tensor class: `Tensor.x = ...`,
    `setattr(Tensor, ...)`, through an alias (`T = Tensor`), or onto a class handed to a
    module-level function (`def install(T): T.x = ...`)."""
    aliases = set(TENSOR_CLASSES)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) \
                and node.value.id in TENSOR_CLASSES:
            aliases |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    funcs = [f for f in getattr(tree, "body", []) if isinstance(f, ast.FunctionDef)]
    handed = {(id(f), a.arg) for f in funcs for a in f.args.args
              if a.arg in ("T", "cls") or (isinstance(a.annotation, ast.Name)
                                           and a.annotation.id == "type")}
    scopes = [(tree, aliases)] + [(f, aliases | {a for i, a in handed if i == id(f)})
                                  for f in funcs]
    out = []
    for scope, names in scopes:
        for node in ast.walk(scope):
            targets = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            todo = list(targets)
            while todo:
                t = todo.pop()
                if isinstance(t, (ast.Tuple, ast.List)):
                    todo += t.elts
                elif isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) \
                        and t.value.id in names:
                    out.append((f"{t.value.id}.{t.attr} = ...", t.lineno))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("setattr", "delattr") and node.args \
                    and isinstance(node.args[0], ast.Name) and node.args[0].id in names:
                out.append((f"{node.func.id}({node.args[0].id}, ...)", node.lineno))
    return sorted(set(out), key=lambda w: w[1])


def test_the_attribute_scanner_sees_patching(tmp_path):
    src = ("from .tensor import Tensor\nT = Tensor\nT.a = 1\nTensor.b, x = 2, 3\n"
           "setattr(Tensor, 'c', 4)\ndef install(T: type):\n    T.d = 5\n"
           "def fine(x):\n    x.e = 6\n")
    found = [line for _, line in _attribute_writes(ast.parse(src))]
    assert found == [3, 4, 5, 7]


def test_no_module_adds_attributes_to_tensor():
    # Tensor's methods and operators are listed in its class body (tracer/tensor.py), not
    # attached from outside by some install() function
    bad = [f"{path.relative_to(PKG.parent)}:{line}: {what}"
           for path in sorted(PKG.rglob("*.py"))
           for what, line in _attribute_writes(ast.parse(path.read_text(), str(path)))]
    assert not bad, "attributes written onto Tensor from outside its class:\n" + "\n".join(bad)


def _class_body_names(path: pathlib.Path, name: str) -> set[str]:
    cls = next(n for n in ast.parse(path.read_text()).body
               if isinstance(n, ast.ClassDef) and n.name == name)
    names = set()
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        todo = list(targets)
        while todo:
            t = todo.pop()
            if isinstance(t, (ast.Tuple, ast.List)):
                todo += t.elts
            elif isinstance(t, ast.Name):
                names.add(t.id)
    return names


def test_tensor_has_exactly_the_attributes_its_class_bodies_define():
    # with every module of the package loaded, however a module might patch the class
    import importlib
    import pkgutil

    import numpy as np

    from tracejit.tracer.tensor import Tensor
    from tracejit.tracer.tensor_base import TensorBase
    for m in pkgutil.walk_packages([str(PKG)], "tracejit."):
        try:
            importlib.import_module(m.name)
        except ImportError:          # an optional dependency (mpi4py, cupy) is missing
            pass
    implicit = {"__module__", "__qualname__", "__doc__", "__dict__", "__weakref__",
                "__firstlineno__", "__static_attributes__", "__slotnames__"}
    for cls, path in ((Tensor, PKG / "tracer" / "tensor.py"),
                      (TensorBase, PKG / "tracer" / "tensor_base.py")):
        defined = _class_body_names(path, cls.__name__) | set(cls.__slots__)
        extra = set(vars(cls)) - defined - implicit
        assert not extra, f"{cls.__name__} has attributes its class body does not define: " \
                          f"{sorted(extra)}"
    # the op modules below tensor.py make their results through the base: the final class
    assert type(TensorBase(np.zeros(2))) is Tensor and type(Tensor(np.zeros(2))) is Tensor


def _module_graph(area: str) -> "nx.DiGraph":
    """tracejit.<area>'s modules, an edge for every import of one by another (function-level
    imports too; imports under `if TYPE_CHECKING:` never run and are left out)."""
    g = nx.DiGraph()
    for path in sorted((PKG / area).rglob("*.py")):
        src = _module_name(path)
        g.add_node(src)
        for target, line in _targets(path, skip_type_checking=True):
            if target.startswith(f"tracejit.{area}") and target != src and \
                    not src.startswith(target + "."):
                g.add_edge(src, target, line=line)
    return g


def _tracer_module_graph() -> "nx.DiGraph":
    return _module_graph("tracer")


@pytest.mark.parametrize("area", sorted(p.name for p in PKG.iterdir()
                                        if (p / "__init__.py").is_file()))
def test_no_import_cycle_inside_a_package(area):
    g = _module_graph(area)
    cycles = list(nx.simple_cycles(g))
    assert not cycles, f"import cycles inside tracejit/{area}:\n" + "\n".join(
        " -> ".join(f"{a.rsplit('.', 1)[1]} (line {g.edges[a, b]['line']})"
                    for a, b in zip(c, c[1:] + c[:1])) for c in cycles[:20])


def test_the_tracer_graph_sees_edges():
    assert _tracer_module_graph().has_edge("tracejit.tracer.tensor", "tracejit.tracer.ops")


def test_type_checking_imports_are_not_edges(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from .core import Graph\nfrom .dtypes import DType\n")
    targets = {t for t, _ in _targets(probe, "tracejit.ir.probe", skip_type_checking=True)}
    assert targets == {"tracejit.ir.dtypes"}


def test_only_tensor_py_and_the_package_face_import_the_final_class():
    # the op modules sit below tensor.Tensor and make tensors through TensorBase
    users = sorted(a.rsplit(".", 1)[1] for a, b in _tracer_module_graph().edges
                   if b == "tracejit.tracer.tensor")
    assert users == ["tracer"], users
