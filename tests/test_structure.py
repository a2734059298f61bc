"""The shape the code keeps: one exit rule, no import cycle, modules a newcomer can read."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "airflow_provider_kling"


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def _enclosing_functions(tree: ast.Module) -> dict[ast.AST, str]:
    """Each node, mapped to the name of the function it is in (``""`` at module level)."""
    owner: dict[ast.AST, str] = {}

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            owner[child] = name
            visit(child, name)

    visit(tree, "")
    return owner


def test_only_the_exit_rule_and_kling_cancel_call_the_hooks_cancel():
    callers = set()
    for module, tree in _modules().items():
        owner = _enclosing_functions(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "cancel":
                callers.add(f"{module}.{owner[node]}")
    assert callers == {
        "airflow_provider_kling.wait.end_wait",
        "airflow_provider_kling.wait.end_wait_async",
        "airflow_provider_kling.cli._cancel",
    }


def _import_time_imports(module: str, tree: ast.Module) -> set[str]:
    """Our modules that ``module`` imports when it is imported (not in functions, not for type checking)."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("airflow_provider_kling"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("airflow_provider_kling"))

    visit(tree.body)
    found.discard(module)
    return found


def test_no_module_imports_itself_back_through_others():
    modules = _modules()
    graph = {name: _import_time_imports(name, tree) & set(modules) for name, tree in modules.items()}
    cycles = []

    def walk(name: str, path: list[str]) -> None:
        for dep in graph[name]:
            if dep == path[0]:
                cycles.append([*path, dep])
            elif dep not in path and len(path) < len(graph):
                walk(dep, [*path, dep])

    for name in graph:
        if name != "airflow_provider_kling":  # every submodule's parent package is imported first, by Python
            walk(name, [name])
    cycles = [cycle for cycle in cycles if "airflow_provider_kling" not in cycle]
    assert cycles == []


def test_the_hook_module_stays_readable():
    assert len((PACKAGE / "hooks" / "kling.py").read_text().splitlines()) <= 400
