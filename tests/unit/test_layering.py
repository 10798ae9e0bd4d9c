"""The package's layering, read from the source with ast (lazy imports inside functions count too).

`store/` is the volume layout, the bottom layer: it imports only itself and the package's top-level modules.
`core/` is pure: no Kopf handlers, no CLI, no Kubernetes client, no workers. `controller/` handlers are thin and
never reach into a worker. No two top-level subpackages import each other, directly or through others.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

import datasweep

PACKAGE = Path(datasweep.__file__).parent
SUBPACKAGES = sorted(path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file())

# subpackage -> the subpackages it must not import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "store": ("api", "cli", "controller", "core", "k8s", "local", "testing", "workloads"),
    "core": ("cli", "controller", "k8s", "local", "workloads"),
    "controller": ("cli", "workloads"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every datasweep module `path` imports; `from datasweep import x` names x."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing package
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)


def layer(dotted: str) -> str | None:
    """The top-level subpackage a dotted datasweep name belongs to (None: a top-level module or outside)."""
    parts = dotted.split(".")
    if parts[0] != "datasweep" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in SUBPACKAGES else None


def edges() -> list[tuple[str, str, str]]:
    """(importing module and line, importing subpackage, imported name) across subpackages."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = layer(module_name(path))
        for line, name in imported(path):
            target = layer(name)
            if source is not None and target is not None and target != source:
                found.append((f"{module_name(path)}:{line}", source, name))
    return found


@pytest.mark.parametrize("subpackage", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(subpackage: str) -> None:
    wrong = [
        f"{where} imports {name}"
        for where, source, name in edges()
        if source == subpackage and layer(name) in FORBIDDEN[subpackage]
    ]
    assert not wrong, f"{subpackage}/ must not import {', '.join(FORBIDDEN[subpackage])}:\n  " + "\n  ".join(wrong)


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that starts and ends at the same node, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_subpackages_import_each_other_without_cycles() -> None:
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    for at, source, name in edges():
        target = layer(name)
        assert target is not None
        graph.setdefault(source, set()).add(target)
        where.setdefault((source, target), f"{at} imports {name}")
    found = cycle(graph)
    assert found is None, (
        "the subpackages import each other in a cycle: "
        + " -> ".join(found)
        + "\n  "
        + "\n  ".join(where[(a, b)] for a, b in itertools.pairwise(found))
    )


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return False


def test_the_cli_backends_and_common_helpers_do_not_import_each_other_in_a_cycle() -> None:
    paths = sorted((PACKAGE / "cli").glob("*.py"))
    known = {module_name(path) for path in paths}

    def module_of(name: str) -> str | None:  # `datasweep.cli.common.BadInput` -> datasweep.cli.common
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph = {module_name(path): {m for _, name in imported(path) if (m := module_of(name))} for path in paths}
    backends, common = "datasweep.cli.backends", "datasweep.cli.common"
    assert not (reaches(graph, backends, common) and reaches(graph, common, backends)), (
        "cli/backends.py and cli/common.py import each other (directly or through other cli modules)"
    )


def test_the_checks_see_what_they_check() -> None:
    """The walk finds the layers and their imports (a test that reads nothing would pass on anything)."""
    assert {"api", "cli", "controller", "core", "k8s", "store", "workloads"} <= set(SUBPACKAGES)
    pairs = {(source, layer(name)) for _, source, name in edges()}
    assert ("controller", "core") in pairs
    assert ("workloads", "store") in pairs
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
    assert reaches({"a": {"b"}, "b": {"c"}}, "a", "c")
    assert not reaches({"a": {"b"}}, "b", "a")
