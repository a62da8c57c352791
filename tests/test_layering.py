"""Which rooms may import which: read from the source with `ast`, nothing imported.

The worker (the remote side) and the backends (the extension's side of the
wire) never import each other; what both need lives in `jobapi`, which imports
neither. Platform adapters (`platforms/`) may use both, so nothing below them
imports them. Relative and absolute imports count alike, and so do
`importlib.import_module("...")` calls with a literal name. And no modules of
the package import each other in a circle (the stack tooling once did).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "comfy_remote_exec"

# room -> the rooms it must not import
FORBIDDEN = {
    "worker": ("backends", "extension", "platforms"),
    "backends": ("worker", "platforms"),
    "jobapi": ("worker", "backends", "extension", "platforms"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module name `source` (the code of `module`) may import, made absolute.

    `from X import a` yields both `X` and `X.a`, since `a` may be a submodule.
    """
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[:len(parts) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name)
                       and node.func.id in ("import_module", "__import__")))):
            names.add(node.args[0].value)
    return names


def violations(room: str) -> list[str]:
    found = []
    for path in sorted((ROOT / PACKAGE / room).rglob("*.py")):
        module = module_name(path)
        names = imported_names(path.read_text(encoding="utf-8"), module,
                               is_package=path.name == "__init__.py")
        for other in FORBIDDEN[room]:
            bad = f"{PACKAGE}.{other}"
            hits = {n for n in names if n == bad or n.startswith(bad + ".")}
            # `from X import a, b` is one import of X, not three
            found += [f"{path.relative_to(ROOT)} imports {name}" for name in sorted(hits)
                      if not any(name.startswith(h + ".") for h in hits)]
    return found


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_rooms_import_only_what_they_may(room: str) -> None:
    assert (ROOT / PACKAGE / room).is_dir()
    assert violations(room) == []


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a package's own parents left out:
    importing a submodule always runs them first)."""
    sources = {module_name(p): p for p in (ROOT / PACKAGE).rglob("*.py")}
    graph = {}
    for module, path in sources.items():
        names = imported_names(path.read_text(encoding="utf-8"), module,
                               is_package=path.name == "__init__.py")
        graph[module] = {n for n in names if n in sources and n != module
                         and not module.startswith(n + ".")}
    return graph


def test_no_import_circle() -> None:
    graph = import_graph()
    circles: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for other in sorted(graph[module]):
            if state.get(other) == "open":
                circles.append([*path[path.index(other):], module, other])
            elif other not in state:
                visit(other, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert circles == []


@pytest.mark.parametrize(("source", "module", "expected"), [
    ("from ...backends.http import HttpBackend", "comfy_remote_exec.worker.comfy.runner",
     "comfy_remote_exec.backends.http"),
    ("from ...backends import http", "comfy_remote_exec.worker.api.api",
     "comfy_remote_exec.backends.http"),
    ("from .. import backends", "comfy_remote_exec.worker.app", "comfy_remote_exec.backends"),
    ("from comfy_remote_exec import worker", "comfy_remote_exec.backends.local",
     "comfy_remote_exec.worker"),
    ("import comfy_remote_exec.worker.comfy.runner", "comfy_remote_exec.backends.http",
     "comfy_remote_exec.worker.comfy.runner"),
    ("def f():\n    import importlib\n    importlib.import_module('comfy_remote_exec.worker')",
     "comfy_remote_exec.backends.http", "comfy_remote_exec.worker"),
])
def test_every_kind_of_import_is_seen(source: str, module: str, expected: str) -> None:
    assert expected in imported_names(source, module)


def test_a_package_resolves_relative_imports_from_itself() -> None:
    names = imported_names("from .base import Backend", "comfy_remote_exec.backends",
                           is_package=True)
    assert "comfy_remote_exec.backends.base" in names
