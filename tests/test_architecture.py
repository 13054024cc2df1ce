"""The layout's rules, read from the source: no import cycle, no private name across modules."""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("trainer", "storage", "dashboard")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(root: Path = REPO) -> dict[str, ast.Module]:
    """Every module of our packages, parsed; migrations are Alembic's scripts, not modules."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" not in path.parts:
                found[module_name(path, root)] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def imports(tree: ast.Module) -> Iterator[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every import, those inside functions too."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.module, alias.name, node.lineno


def ours(name: str, modules: dict[str, ast.Module]) -> str | None:
    """The module of ours that an import names (a name may be a submodule), else None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, tree in modules.items():
        for module, imported, _ in imports(tree):
            target = ours(f"{module}.{imported}" if imported else module, modules)
            if target and target != name and not name.startswith(f"{target}."):
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            component.append(node)
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def private_imports(modules: dict[str, ast.Module]) -> list[str]:
    """`from ours import _name` and `ours_module._name` uses, as 'where: what'."""
    found = []
    for name, tree in modules.items():
        aliases = {}
        for module, imported, line in imports(tree):
            if ours(module, modules) is None:
                continue
            if imported and imported.startswith("_") and not imported.startswith("__"):
                found.append(f"{name}:{line}: from {module} import {imported}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and ours(node.module, modules):
                for alias in node.names:
                    if (ours(f"{node.module}.{alias.name}", modules)
                            == f"{node.module}.{alias.name}"):
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                found.append(f"{name}:{node.lineno}: {aliases[node.value.id]}.{node.attr}")
    return found


def test_there_is_no_import_cycle_inside_our_packages() -> None:
    assert cycles(import_graph(sources())) == []


def test_no_private_name_is_imported_from_another_module() -> None:
    assert private_imports(sources()) == []


def test_storage_imports_nothing_of_ours_and_only_the_dashboard_imports_streamlit() -> None:
    modules = sources()
    for name, tree in modules.items():
        imported = {module.split(".")[0] for module, _, _ in imports(tree)}
        if name.startswith("storage"):
            assert not imported & {"trainer", "dashboard"}, name
        if not name.startswith("dashboard"):
            assert "streamlit" not in imported, name
        if name.startswith("trainer"):
            assert "dashboard" not in imported, name


@pytest.mark.parametrize(("files", "expected"), [
    ({"trainer/a.py": "from trainer.b import x\n", "trainer/b.py": "def f():\n"
      "    from trainer.a import y\n"}, [["trainer.a", "trainer.b"]]),
    ({"trainer/a.py": "from trainer import b\n", "trainer/b.py": "import os\n"}, []),
    ({"trainer/p/__init__.py": "", "trainer/p/a.py": "from trainer.p import b\n",
      "trainer/p/b.py": "import trainer.p.a\n"}, [["trainer.p.a", "trainer.p.b"]]),
])
def test_the_cycle_check_finds_a_cycle_hidden_in_a_function(
    tmp_path: Path, files: dict[str, str], expected: list[list[str]]
) -> None:
    for rel, text in {"trainer/__init__.py": "", **files}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert cycles(import_graph(sources(tmp_path))) == expected


def test_the_private_name_check_finds_both_forms() -> None:
    modules = {
        "trainer": ast.parse(""),
        "trainer.a": ast.parse("def _hidden(): ...\n"),
        "trainer.b": ast.parse("from trainer.a import _hidden\n"),
        "trainer.c": ast.parse("from trainer import a\nvalue = a._hidden\n"),
        "trainer.d": ast.parse("from trainer.a import __doc__\nimport os\nos._exit\n"),
    }
    assert private_imports(modules) == ["trainer.b:1: from trainer.a import _hidden",
                                        "trainer.c:2: trainer.a._hidden"]
