"""No import loop inside ``uipbench/``: a static scan of every module's imports.

Two graphs are checked: the imports that run when a module is imported (top level, also inside
``if``/``try`` blocks), and all imports, including those inside functions (lazy imports that run
when a command needs them).  A loop in either is reported with its modules in order.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import uipbench

ROOT = Path(uipbench.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom | ast.Import) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    target = node.module or ""
    prefix = (base + "." + target).strip(".") if node.level else target
    return [prefix] + [f"{prefix}.{a.name}" for a in node.names]


def _type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` — imports that never run."""
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.Module, lazy: bool):
    """Import statements that run at import time (top level, inside if/try/with/class bodies) and,
    with ``lazy``, also those inside functions; never those under ``if TYPE_CHECKING:``."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif _type_checking(node):
            stack.extend(node.orelse)
        elif lazy and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            stack.extend(node.body)
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.ClassDef, ast.For, ast.While)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                stack.extend(getattr(node, field, []) or [])
        elif isinstance(node, ast.ExceptHandler):
            stack.extend(node.body)


def import_graph(lazy: bool) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = list(_imports(tree, lazy))
        targets = set()
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue
            for target in _resolve(name, path.name == "__init__.py", node):
                if target in modules and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            # a package importing its own submodules (re-exports) is not a loop
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _without_parent_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """`from .x import y` inside package p.q also names p.q's __init__: keep the real module edges only."""
    return {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}


@pytest.mark.parametrize("lazy", [False, True], ids=["import-time", "including-lazy"])
def test_no_import_loop_in_uipbench(lazy):
    cycle = find_cycle(_without_parent_packages(import_graph(lazy)))
    assert cycle is None, "import loop: " + " -> ".join(cycle)


def test_the_scan_finds_a_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
