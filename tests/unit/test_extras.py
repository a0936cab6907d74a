"""Optional features behind extras: a missing extra is one line naming the pip command, and
importing the service (or any module) pulls in no optional package and changes no global state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from domain.extras import EXTRAS, MissingExtra, check, installed, needs

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "connectors", "tools", "agents", "crews", "knowledge", "runtime", "api", "twin", "crossdock")
# Set by tools.offline before CrewAI is imported (that is what keeps it offline), and by CrewAI
# itself; only the modules that import CrewAI may change them.
CREWAI_ENV = {
    "CREWAI_DISABLE_TELEMETRY",
    "CREWAI_DISABLE_TRACKING",
    "OTEL_SDK_DISABLED",
    "CREWAI_TRACING_ENABLED",
    "CREWAI_DISABLE_VERSION_CHECK",
    "LITELLM_LOCAL_MODEL_COST_MAP",
    "LITELLM_TELEMETRY",
    "TOKENIZERS_PARALLELISM",
}
CREWAI_MODULES = {"crews.agent_runtime", "crews.scripted_llm", "chat.writer", "tools.agent_tools"}


def _python(code: str, *, env: dict[str, str] | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_a_missing_module_of_an_extra_becomes_one_line_naming_the_extra() -> None:
    with pytest.raises(MissingExtra) as caught, needs("knowledge"):
        raise ModuleNotFoundError("No module named 'qdrant_client'", name="qdrant_client.http")
    assert str(caught.value) == "the knowledge base needs: pip install 'crossdock[knowledge]'"
    assert caught.value.extra == "knowledge"
    assert "\n" not in str(caught.value)


def test_any_other_missing_module_is_left_as_it_is() -> None:
    with pytest.raises(ModuleNotFoundError), needs("knowledge"):
        raise ModuleNotFoundError("No module named 'httpx'", name="httpx")


def test_check_names_the_extra_without_importing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # find_spec then answers None: not installed
    assert not installed("learn")
    with pytest.raises(MissingExtra, match=r"pip install 'crossdock\[learn\]'"):
        check("learn")


def test_every_extra_of_the_package_is_known_to_the_error_messages() -> None:
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(declared) - {"test", "dev"} == set(EXTRAS)


def test_the_api_answers_503_with_the_one_line_message() -> None:
    from api.main import create_app

    app = create_app(container=SimpleNamespace(aredis=None))  # type: ignore[arg-type]

    @app.get("/needs-learn")
    def _needs_learn() -> None:
        raise MissingExtra("learn")

    response = TestClient(app).get("/needs-learn")
    assert response.status_code == 503
    assert response.json() == {"detail": "retraining the triage override model needs: pip install 'crossdock[learn]'"}


@pytest.mark.parametrize(
    ("hidden", "argv", "extra"),
    [
        ("sklearn", ["triage", "retrain"], "learn"),
        ("qdrant_client", ["knowledge", "search", "lot mismatch"], "knowledge"),
    ],
)
def test_the_command_line_prints_one_line_and_exits_2(tmp_path: Path, hidden: str, argv: list[str], extra: str) -> None:
    done = _python(
        f"""
        import sys
        sys.modules[{hidden!r}] = None  # as if the extra were not installed
        sys.argv = ["crossdock", *{argv!r}]
        from crossdock.cli import main
        main()
        """,
        env={"CROSSDOCK_DATA_DIR": str(tmp_path), "CROSSDOCK_KNOWLEDGE_PATH": str(tmp_path / "kb"), "COLUMNS": "40"},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: {MissingExtra(extra)}"  # type: ignore[arg-type]


def test_importing_the_api_imports_no_optional_package() -> None:
    done = _python(
        """
        import json, sys
        import api.main
        heavy = ("sklearn", "scipy", "crewai", "litellm", "qdrant_client", "onnxruntime", "trytond")
        print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(heavy))))
        """
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_importing_any_module_changes_no_logger_and_no_environment_variable() -> None:
    done = _python(
        f"""
        import importlib, json, logging, os, pathlib, warnings
        warnings.simplefilter("ignore")
        ours = {PACKAGES!r}
        names = sorted(
            ".".join(path.with_suffix("").parts).removesuffix(".__init__")
            for package in ours
            for path in pathlib.Path(package).rglob("*.py")
            if "migrations" not in path.parts  # Alembic's scripts run inside Alembic's context only
        )

        def state():
            root = logging.getLogger()
            levels = {{
                name: logger.level
                for name, logger in logging.root.manager.loggerDict.items()
                if isinstance(logger, logging.Logger) and name.split(".")[0] in ours
            }}
            return dict(os.environ), (root.level, list(root.handlers), list(root.filters)), levels

        changes = {{}}
        for name in names:
            env, root, levels = state()
            importlib.import_module(name)
            env2, root2, levels2 = state()
            found = sorted(k for k in set(env) | set(env2) if env.get(k) != env2.get(k))
            if root != root2:
                found.append("root logger")
            found += [f"logger {{k}}" for k in levels2 if levels2[k] != levels.get(k, logging.NOTSET)]
            if found:
                changes[name] = found
        print(json.dumps(changes))
        """,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    changes: dict[str, Any] = json.loads(done.stdout)
    crewai = {name: found for name, found in changes.items() if name in CREWAI_MODULES}
    assert {name: found for name, found in changes.items() if name not in CREWAI_MODULES} == {}
    # The modules that import CrewAI set only its offline switches, before the import.
    assert all(set(found) <= CREWAI_ENV for found in crewai.values()), crewai
