"""LLM mode against a real local model (``make test-llm``); not collected by a plain ``pytest`` run.

The model is SmolLM2-135M-Instruct served by llama-cpp-python's OpenAI-compatible server on
127.0.0.1 (``scripts/llm_server.sh``, its own venv under ``.cache/``), started once per session,
adopted by ``runtime.processes.OWNER`` (stopped at the end, on an error and on SIGTERM/SIGHUP/Ctrl+C).
``CROSSDOCK_TEST_LLM_BASE_URL`` points the tests at a server already running instead.

A 135M model's content is unreliable: these tests assert what must hold whatever it says.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime.processes import OWNER
from tests.integration.conftest import (  # noqa: F401  (fixtures reused from the integration suite)
    Stack,
    close_stack,
    example,
    make_stack,
    redis_url,
)

REPO = Path(__file__).resolve().parents[2]
MODEL = "openai/smollm2"
CONTEXT = 4096

# Only `make test-llm` (CROSSDOCK_TEST_LLM=1) collects these: a plain `pytest` keeps its time.
collect_ignore_glob = [] if os.environ.get("CROSSDOCK_TEST_LLM") == "1" else ["test_*.py"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the model server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/models", timeout=2.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the model server at {url} did not answer within {timeout:g}s")


@pytest.fixture(scope="session")
def llm_url() -> Iterator[str]:
    """The local model's OpenAI-compatible base URL (``.../v1``)."""
    given = os.environ.get("CROSSDOCK_TEST_LLM_BASE_URL")
    if given:
        _wait_ready(given, None, 10.0)
        yield given
        return
    subprocess.run([str(REPO / "scripts" / "llm_server.sh"), "setup"], check=True, capture_output=True)
    port = _free_port()
    log = (REPO / ".cache" / "llm-server.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(REPO / "scripts" / "llm_server.sh"), "serve", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    OWNER.adopt(proc.pid, "llm-server")
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_ready(url, proc)
        print(f"\nmodel server ready in {time.monotonic() - started:.1f}s on {url}")
        yield url
    finally:
        OWNER.stop(proc.pid)
        log.close()


@pytest.fixture
def llm_env(llm_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """LLM mode for everything built in the test: the model, its context, bounds sized for 2 cores."""
    env = {
        "CROSSDOCK_LLM_MODEL": MODEL,
        "CROSSDOCK_LLM_BASE_URL": llm_url,
        "CROSSDOCK_LLM_CONTEXT_TOKENS": str(CONTEXT),
        "CROSSDOCK_AGENT_MAX_SECONDS": "150",
        "CROSSDOCK_CHAT_MAX_SECONDS": "60",
        "CROSSDOCK_AGENT_MAX_TOOL_CALLS": "2",
        "CROSSDOCK_LLM_TOKEN_RATIO": "1.45",  # SmolLM2's tokenizer vs litellm's generic count (measured)
        "CROSSDOCK_LLM_RESERVE_TOKENS": "384",
        "OPENAI_API_KEY": "sk-local",  # loopback only: the client wants some key
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def llm_stack(tmp_path: Path, redis_url: str, example: dict[str, Any], llm_env: dict[str, str]) -> Iterator[Stack]:  # noqa: F811
    """The integration stack (HTTP intake, Redis, worker, twin) with the worker in LLM mode."""
    s = make_stack(tmp_path, redis_url, example, claim_idle_ms=900_000)
    assert s.container.pipeline.judge is not None and s.container.pipeline.agents is not None
    yield s
    close_stack(s)


def drain(stack: Stack) -> int:
    """One burst worker until the queue is idle (a model job takes minutes on 2 cores)."""
    from runtime.worker import Worker

    c = stack.container
    return Worker(c.queue, c.pipeline.handle, c.settings, name="llm").run(burst=True)
