"""The package's layout: folders by purpose, a small top level, no import circle, the builder on top of
what it builds."""

from __future__ import annotations

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "clever_jax")


def _modules() -> dict[str, str]:
    """Dotted name -> file of every module of the package (a package is its __init__)."""
    found = {}
    for folder, _, names in os.walk(ROOT):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path[:-3], os.path.dirname(ROOT)).replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its file (inside functions and
    TYPE_CHECKING blocks too)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("clever_jax"):
                for alias in node.names:  # `from pkg import module` names a module, else a definition of pkg.
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("clever_jax"))
        graph[name] = targets - {name}
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for target in graph.get(stack.pop(), ()):
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    circles = sorted((a, b) for a, targets in graph.items() for b in targets if a in _reachable(graph, b))
    assert not circles, circles


def test_the_circle_check_sees_a_circle():
    graph = {"clever_jax.a": {"clever_jax.b"}, "clever_jax.b": {"clever_jax.c"}, "clever_jax.c": {"clever_jax.a"}}
    assert "clever_jax.a" in _reachable(graph, "clever_jax.b")


def test_the_top_level_holds_the_entry_points_and_plumbing_only():
    top = sorted(name for name in os.listdir(ROOT) if name.endswith(".py"))
    assert len(top) <= 12, top
    folders = {name for name in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, name, "__init__.py"))}
    assert folders == {"data", "models", "training", "evaluation", "kb", "experiments", "perf"}


def test_nothing_below_the_builder_imports_it():
    graph = import_graph()
    below = [name for name in graph if name.split(".")[1:2] in (["data"], ["models"], ["evaluation"])
             or name in ("clever_jax.training.steps", "clever_jax.training.checkpoints",
                         "clever_jax.training.precision", "clever_jax.training.sharding")]
    assert len(below) > 20
    users = [name for name in below if "clever_jax.training.builder" in _reachable(graph, name)]
    assert not users, users
