"""The package's shape: the core imports nothing of ours but itself and nothing outside the
stdlib, no two modules import each other (directly or round a loop), and modules stay small.

Imports are read with `ast`, so a function-level import counts as much as a module-level one:
hiding a cycle inside a function does not make it go away.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "alert_handler"
THIRD_PARTY = ("requests", "paramiko", "prometheus_client", "urllib3", "dotenv")
MAX_LINES = 400  # past it, a module is named in the run's warnings summary


@dataclass(frozen=True)
class Import:
    """One import statement of a module: what it names, and where."""

    line: int
    module: str  # the module imported from (absolute)
    names: tuple[str, ...]  # the names of `from module import names`; () for `import module`


def module_name(path: Path) -> str:
    """`alert_handler/poll/__init__.py` -> `alert_handler.poll`."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str | None = None) -> list[Import]:
    """Every import in `path` (the module `name`), at any depth: functions, classes, `if`."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    # A module's `if __name__ == "__main__":` block runs only when it is executed as a script,
    # that is as the module `__main__`, a different module: what it imports is no cycle.
    tree.body = [n for n in tree.body if not _is_main_block(n)]
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(Import(node.lineno, base, tuple(a.name for a in node.names)))
    return found


def _is_main_block(node: ast.stmt) -> bool:
    """Whether `node` is `if __name__ == "__main__": ...`."""
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
        and len(node.test.comparators) == 1
        and isinstance(node.test.comparators[0], ast.Constant)
        and node.test.comparators[0].value == "__main__"
    )


def targets(imp: Import, modules: dict[str, Path]) -> set[str]:
    """The package modules an import depends on.

    `from pkg import sub` depends on the submodule `sub` alone; `from pkg import name` on pkg's
    `__init__`. The parent packages Python runs on the way are not counted: a package's
    `__init__` importing its own submodules is no cycle unless they import its names back.
    """
    if not imp.names:
        return {imp.module} if imp.module in modules else set()
    out = set()
    for name in imp.names:
        sub = f"{imp.module}.{name}"
        if sub in modules:
            out.add(sub)
        elif imp.module in modules:
            out.add(imp.module)
    return out


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {module it imports: line of the first such import}."""
    modules = all_modules()
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        for imp in imports_of(path):
            for target in targets(imp, modules):
                graph[name].setdefault(target, imp.line)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, pending = stack[-1]
            if not pending:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            nxt = pending.pop(0)
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done:
                stack.append((nxt, sorted(graph[nxt])))
                path.append(nxt)
                on_path.add(nxt)
    return None


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    """`a (line 3) -> b (line 9) -> a`: where each module imports the next."""
    steps = [f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(cycle)]
    return " -> ".join([*steps, cycle[-1]])


# -- (a) the core ---------------------------------------------------------------------------------
def core_modules() -> list[str]:
    """Every module under alert_handler/core."""
    return [name for name in all_modules() if name.startswith("alert_handler.core")]


def test_importing_the_core_loads_no_third_party_package() -> None:
    """1. A fresh interpreter imports alert_handler.core and each of its modules.
    2. None of requests, paramiko, prometheus_client, urllib3, dotenv is loaded."""
    names = core_modules()
    assert "alert_handler.core" in names and len(names) > 1
    assert loaded_after_import(", ".join(names)) == set()


def loaded_after_import(module: str) -> set[str]:
    """Which of THIRD_PARTY a fresh interpreter holds after importing `module`."""
    script = (
        f"import sys, {module}\n"
        f"print(','.join(sorted(m for m in {THIRD_PARTY!r} if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return set(filter(None, done.stdout.strip().split(",")))


def test_the_simulators_poll_stand_in_loads_no_third_party_package() -> None:
    """`python -m alert_handler.sim poll` runs once per poll: stdlib only, it starts
    fast. Its command line module loads none of the third-party packages."""
    assert loaded_after_import("alert_handler.sim.command") == set()


def test_the_command_line_loads_the_daemon_only_when_it_runs() -> None:
    """`alert-handler status` and the other light commands start without requests, paramiko or
    prometheus_client (the function-level imports in cli.main and cli.commands exist for this):
    loading the command line and its parser takes python-dotenv alone."""
    assert loaded_after_import("alert_handler.cli.main") <= {"dotenv"}


def test_the_core_imports_only_the_stdlib_and_itself() -> None:
    """Every import under alert_handler/core names a stdlib module or alert_handler.core."""
    modules = all_modules()
    wrong = []
    for name in core_modules():
        for imp in imports_of(modules[name]):
            top = imp.module.partition(".")[0]
            ours = imp.module == "alert_handler.core" or imp.module.startswith(
                "alert_handler.core."
            )
            if not ours and top not in sys.stdlib_module_names:
                wrong.append(f"{modules[name].relative_to(ROOT)}:{imp.line} imports {imp.module}")
    assert wrong == []


# -- (b) no import cycle --------------------------------------------------------------------------
def test_no_import_cycle_between_modules() -> None:
    """The graph of every import (module- and function-level) under alert_handler has no cycle."""
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + describe(cycle, graph)


def test_the_cycle_finder_finds_a_cycle_and_resolves_submodules(tmp_path: Path) -> None:
    """The checker itself: a loop is found and reported with lines; `from pkg import sub` names
    the submodule; an __init__ importing its own submodules is no cycle; relative and
    function-level imports count, an `if __name__ == "__main__":` block does not."""
    graph = {"a": {"b": 3}, "b": {"c": 9}, "c": {"a": 12}, "d": {"a": 1}}
    cycle = find_cycle(graph)
    assert cycle is not None
    assert describe(cycle, graph) == "a (line 3) -> b (line 9) -> c (line 12) -> a"
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 2}}) is None
    modules = {"alert_handler.poll": PACKAGE, "alert_handler.poll.ssh": PACKAGE}
    from_sub = Import(1, "alert_handler.poll", ("ssh",))
    from_init = Import(1, "alert_handler.poll", ("Poller",))
    assert targets(from_sub, modules) == {"alert_handler.poll.ssh"}
    assert targets(from_init, modules) == {"alert_handler.poll"}
    assert targets(Import(1, "alert_handler.poll.ssh", ()), modules) == {"alert_handler.poll.ssh"}
    assert targets(Import(1, "requests", ()), modules) == set()
    source = tmp_path / "mod.py"
    source.write_text(
        "import os\n\ndef f() -> None:\n    from ..core import x\n\n"
        'if __name__ == "__main__":\n    from alert_handler.poll import mod\n'
    )
    assert imports_of(source, "alert_handler.poll.mod") == [
        Import(1, "os", ()),
        Import(4, "alert_handler.core", ("x",)),
    ]


# -- (c) module size ------------------------------------------------------------------------------
@pytest.mark.filterwarnings("always::UserWarning")
def test_large_modules_are_named() -> None:
    """A module outside sim/ past MAX_LINES is a warning in the run's summary, not a failure: a
    file is split where its concepts split, never to fit a number."""
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
        for p in PACKAGE.rglob("*.py")
        if "sim" not in p.relative_to(PACKAGE).parts
    }
    for name, lines in sorted(sizes.items()):
        if lines > MAX_LINES:
            warnings.warn(f"{name} has {lines} lines: does it hold one concept?", stacklevel=1)


def package_of(module: str) -> str:
    """`alert_handler.events.hub` -> `alert_handler.events`; a top-level module is its own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def package_graph() -> dict[str, dict[str, int]]:
    """package -> {package it imports: a line of one such import} (imports within one package
    are not edges)."""
    graph: dict[str, dict[str, int]] = {}
    for module, imported in import_graph().items():
        mine = package_of(module)
        edges = graph.setdefault(mine, {})
        for target, line in imported.items():
            if package_of(target) != mine:
                edges.setdefault(package_of(target), line)
    return graph


def test_no_import_cycle_between_packages() -> None:
    """Packages import each other in one direction: the folder tree is a layering."""
    graph = package_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "package cycle: " + describe(cycle, graph)
