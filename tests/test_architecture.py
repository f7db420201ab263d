"""The shape of the code (issue 14): no import cycle inside `phoenixctl` (imports anywhere in
a module count, those under `if TYPE_CHECKING:` and inside functions included), the engine
never imports a concrete driver, and modules and classes stay of a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

import phoenixctl

ROOT = Path(phoenixctl.__file__).resolve().parent
PACKAGE = "phoenixctl"
CONCRETE_DRIVERS = ("local", "aws", "simulated", "haproxy")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in ROOT.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """Every phoenixctl module `name` imports, wherever the import statement is."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith(PACKAGE)}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith(PACKAGE):
                continue
            for alias in node.names:  # `from . import x`: x may be a module of its own
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
    return {module for module in found if module in MODULES and module != name}


def find_cycle() -> list[str] | None:
    graph = {name: imports_of(name) for name in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for other in sorted(graph[name]):
            if state.get(other) == 1:
                return stack[stack.index(other):] + [other]
            if other not in state and (cycle := visit(other)):
                return cycle
        stack.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_no_import_cycle_inside_phoenixctl():
    cycle = find_cycle()
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles(tmp_path, monkeypatch):
    """The check above can fail: a cycle hidden behind TYPE_CHECKING is found."""
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import B\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", package)
    monkeypatch.setattr(__import__(__name__), "MODULES", {module_name(p): p for p in package.rglob("*.py")})
    assert find_cycle() in (["phoenixctl.a", "phoenixctl.b", "phoenixctl.a"], ["phoenixctl.b", "phoenixctl.a", "phoenixctl.b"])


def test_the_engine_never_imports_a_concrete_driver():
    for name in MODULES:
        if name.startswith(f"{PACKAGE}.engine"):
            concrete = {m for m in imports_of(name) if m.startswith(f"{PACKAGE}.drivers.") and m.split(".")[2].startswith(CONCRETE_DRIVERS)}
            assert not concrete, (name, concrete)


def test_modules_and_classes_stay_readable():
    for name, path in MODULES.items():
        lines = len(path.read_text().splitlines())
        assert lines <= 550, f"{name}: {lines} lines"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                assert size <= 330, f"{name}.{node.name}: {size} lines"


def test_every_module_says_what_it_is_for():
    for name, path in MODULES.items():
        assert ast.get_docstring(ast.parse(path.read_text())), f"{name} has no docstring"


def test_the_product_knows_no_test_double_of_aws():
    """The AWS shim lives in tests/ and is installed through the client factory's hook."""
    for name, path in MODULES.items():
        text = path.read_text().lower()
        assert "shim" not in text and "phoenix_aws_shim" not in text, name
