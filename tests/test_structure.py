"""The shape the code keeps: one exit rule, no import cycle, modules a newcomer can read."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

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
        "airflow_provider_kling.exit_rule.end_wait",
        "airflow_provider_kling.exit_rule.end_wait_async",
        "airflow_provider_kling.commands._cancel",
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


def _run_time_imports(module: str, tree: ast.Module) -> set[str]:
    """
    Our modules that ``module`` imports at all, when it is imported or when one of its functions
    runs (an import inside a function is an import too), but not those only for type checking.
    """
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("airflow_provider_kling"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # a submodule imported by name
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("airflow_provider_kling"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle of ``graph`` (module -> modules it imports), each once, from its smallest name."""
    cycles: list[list[str]] = []

    def walk(name: str, path: list[str]) -> None:
        for dep in sorted(graph.get(name, ())):
            if dep == path[0]:
                cycles.append([*path, dep])
            elif dep not in path and dep > path[0]:
                walk(dep, [*path, dep])

    for name in sorted(graph):
        if name != "airflow_provider_kling":  # every submodule's parent package is imported first, by Python
            walk(name, [name])
    return [cycle for cycle in cycles if "airflow_provider_kling" not in cycle]


def _graph(read: Callable[[str, ast.Module], set[str]]) -> dict[str, set[str]]:
    modules = _modules()
    return {name: read(name, tree) & set(modules) for name, tree in modules.items()}


def test_no_module_imports_itself_back_through_others():
    assert import_cycles(_graph(_import_time_imports)) == []


def test_imports_point_one_way_at_run_time_too():
    """Counting the imports inside functions: a lower layer never reaches up, not even lazily."""
    assert import_cycles(_graph(_run_time_imports)) == []


def test_the_cycle_check_can_fail():
    """A loop through a lazy import, as the HTTP client once reached up into the wait, is found."""
    graph = _graph(_run_time_imports)
    graph["airflow_provider_kling.hooks.client"] = {*graph["airflow_provider_kling.hooks.client"], WAIT_LOOPS}
    cycles = import_cycles(graph)
    assert cycles
    assert all("airflow_provider_kling.hooks.client" in cycle for cycle in cycles)


#: The layers, lowest first: a module imports only modules of its own layer or below, at run time too.
LAYERS = {
    "transport and client": [
        "airflow_provider_kling.constants",
        "airflow_provider_kling.states",
        "airflow_provider_kling.untrusted",
        "airflow_provider_kling.exceptions",
        "airflow_provider_kling.retry",
        "airflow_provider_kling.streaming",
        "airflow_provider_kling.media",
        "airflow_provider_kling.shots",
        "airflow_provider_kling.reencode",
        "airflow_provider_kling.stitch",
        "airflow_provider_kling.worker_run",
        "airflow_provider_kling.models",
        "airflow_provider_kling.wait_plan",
        "airflow_provider_kling.budgets",
        "airflow_provider_kling.ledger_films",
        "airflow_provider_kling.ledger",
        "airflow_provider_kling.family",
        "airflow_provider_kling.images",
        "airflow_provider_kling.hooks",
        "airflow_provider_kling.hooks.target",
        "airflow_provider_kling.hooks.transport",
        "airflow_provider_kling.hooks.responses",
        "airflow_provider_kling.hooks.account_health",
        "airflow_provider_kling.hooks.session_pool",
        "airflow_provider_kling.hooks.destination",
        "airflow_provider_kling.hooks.download",
        "airflow_provider_kling.hooks.client",
        "airflow_provider_kling.hooks.kling",
        "airflow_provider_kling.store",
    ],
    "the wait": [
        "airflow_provider_kling.wait",
        "airflow_provider_kling.exit_rule",
        "airflow_provider_kling.follow",
        "airflow_provider_kling.spend",
    ],
    "the trigger and the task's glue": [
        "airflow_provider_kling.triggers",
        "airflow_provider_kling.triggers.kling",
        "airflow_provider_kling.records",
        "airflow_provider_kling.resume",
        "airflow_provider_kling.lineage",
        "airflow_provider_kling.task_wait",
        "airflow_provider_kling.take",
    ],
}
WAIT_LOOPS = "airflow_provider_kling.follow"


def test_each_layer_imports_only_the_layers_below_it():
    graph = _graph(_run_time_imports)
    level = {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}
    top = len(LAYERS)  # operators, sensor, transfer, decorator, CLI, links, notifications, testing
    upward = [
        f"{module} -> {dep}"
        for module, deps in graph.items()
        for dep in deps
        if "airflow_provider_kling" not in (module, dep) and level.get(dep, top) > level.get(module, top)
    ]
    assert upward == []


def test_every_module_is_a_room_a_newcomer_can_read():
    """Under 400 lines each, but the simulator (a whole RunComfy of its own)."""
    long = {
        str(path.relative_to(PACKAGE)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > 400 and path.name != "simulator.py"
    }
    assert long == {}
