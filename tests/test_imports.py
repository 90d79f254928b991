"""The package's modules import each other without circles (counting imports inside functions too), so each one
can be read, tested and imported on its own."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import imagefolder

ROOT = Path(imagefolder.__file__).parent


def _module_names() -> dict[str, Path]:
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its text (relative imports resolved)."""
    modules = _module_names()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] + [node.module] if node.module
                                else package[:len(package) - node.level + 1]) if node.level else node.module
                for alias in node.names:  # "from .x import y" names module x.y when y is a module
                    deps.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "imagefolder.errors" in graph["imagefolder.checkpoint"]                 # from .errors import ...
    assert "imagefolder.models.classifier" in graph["imagefolder.train.options"]  # inside a method
    assert graph["imagefolder.errors"] == set()
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_every_module_imports_alone():
    names = sorted(n for n in _module_names() if not n.endswith("__main__"))
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n" \
           "    [sys.modules.pop(m) for m in list(sys.modules) if m.startswith('imagefolder')]\n"
    subprocess.run([sys.executable, "-c", code, *names], check=True, timeout=1800)  # ~20 s on an idle machine
