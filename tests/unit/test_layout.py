"""The package's layout holds: no module of ``consumer`` imports itself round (at any depth,
counting imports inside functions), and the configuration knows every vendor's connection
keys without importing the vendor clients."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from consumer.config import VENDOR_KEYS
from consumer.vendors import VENDORS

ROOT = Path(__file__).resolve().parents[2]


def import_graph() -> dict[str, set[str]]:
    modules = {}
    for path in (ROOT / "consumer").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: set[str] = set()
            if isinstance(node, ast.ImportFrom) and node.module:
                # ``from a.b import c, d``: each of c and d that is a module, and a.b itself
                targets = {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                targets = {a.name for a in node.names}
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycle_from(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a path, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_module_imports_itself_round() -> None:
    graph = import_graph()
    assert "consumer.vendors.webflow" in graph["consumer.vendors"]  # the walk sees imports
    assert cycle_from(graph) is None, " -> ".join(cycle_from(graph) or [])


def test_a_cycle_is_found_when_there_is_one() -> None:
    assert cycle_from({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_from({"a": {"b"}, "b": set()}) is None


def test_the_configuration_knows_every_vendor_without_importing_the_clients() -> None:
    assert list(VENDOR_KEYS) == list(VENDORS)
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, consumer.config; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert "consumer.config" in loaded and "consumer.vendors" not in loaded
