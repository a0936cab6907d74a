"""The design's import rules, checked on the source: the domain imports nothing of the project
but itself, and no project package imports another in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "domain",
    "connectors",
    "tools",
    "agents",
    "crews",
    "knowledge",
    "runtime",
    "api",
    "chat",
    "bench",
    "twin",
    "crossdock",
)


def project_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
    return found & set(PACKAGES)


def test_the_domain_imports_nothing_of_the_project_but_itself() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(project_imports(p) - {"domain"}) for p in (ROOT / "domain").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of the project this file imports when it is imported (not inside functions)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        stmts = [node]
        if isinstance(node, ast.With | ast.Try):
            stmts = list(node.body)
        for stmt in stmts:
            names = []
            if isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.level == 0:
                names = [stmt.module, *(f"{stmt.module}.{a.name}" for a in stmt.names)]
            elif isinstance(stmt, ast.Import):
                names = [a.name for a in stmt.names]
            out |= {n for n in names if n in modules}
    return out


def test_no_module_of_the_project_imports_itself_round_a_cycle() -> None:
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {m: top_level_imports(p, set(files)) - {m} for m, p in files.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append([*path[path.index(n) :], n])
            elif n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []
