"""Start and stop a real ``trytond`` on 127.0.0.1 with an SQLite database.

Initialising a database (``trytond-admin --all --activate-dependencies -u <MODULES>``) takes
about 20 s, so it is done once into a *template* directory; each server gets its own copy of the
template's ``.sqlite`` file (SQLite's ``-wal``/``-shm`` side files are never copied).

The admin password is handed to ``trytond-admin`` through ``TRYTONPASSFILE`` (a file readable
only by us, deleted afterwards); it never appears on a command line or in a log.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from connectors.tryton.rpc import TrytonConfig
from domain.extras import check
from runtime.processes import OWNER, stop_tree

# Modules the connectors need; their dependencies (stock, product, party, company, currency,
# account, purchase_request, account_credit_limit...) are activated with them. stock_supply gives
# order points (erp.update_safety_stock), stock_lot lot numbers on moves, sale_credit_limit the
# party's credit limit checked when a sale is confirmed.
MODULES = ("sale", "purchase", "stock_supply", "stock_lot", "sale_credit_limit")
ADMIN_LOGIN = "admin"
_SIDE_FILES = ("-wal", "-shm", "-journal")


class TrytonServerError(RuntimeError):
    """trytond could not be initialised or did not start; the message quotes its log."""


def _script(name: str) -> list[str]:
    """The console script ``name`` of the running interpreter's environment, or ``python -m``."""
    check("tryton")  # trytond runs as a subprocess: say which extra is missing before starting it
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return [str(candidate)]
    module = {"trytond": "trytond.cli", "trytond-admin": "trytond.cli.admin"}[name]
    return [sys.executable, "-m", module]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def write_config(directory: Path, *, port: int = 0, host: str = "127.0.0.1") -> Path:
    """A trytond.conf keeping SQLite databases in ``directory`` and listening on loopback only."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "trytond.conf"
    conf.write_text(
        "\n".join(
            [
                "[database]",
                "uri = sqlite://",
                f"path = {directory}",
                "list = False",
                "[web]",
                f"listen = {host}:{port or 8000}",
                "[queue]",
                # Queued tasks (sale/purchase processing) run right after the request commits.
                "worker = False",
                "[session]",
                # A connector is one long-lived client; allow a generous failed-login budget per IP.
                "max_attempt = 20",
                "[email]",
                # Nothing is ever mailed; an unroutable URI makes that explicit.
                "uri = smtp://127.0.0.1:9",
                "",
            ]
        )
    )
    return conf


def _run_admin(conf: Path, database: str, password: str, log: Path, *extra: str) -> None:
    passfile = conf.parent / f".{database}.pass"
    passfile.write_text(password + "\n")
    passfile.chmod(0o600)
    cmd = [*_script("trytond-admin"), "-c", str(conf), "-d", database, *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYTOND_")}
    env["TRYTONPASSFILE"] = str(passfile)
    try:
        with log.open("ab") as out:
            # The first initialisation asks for the admin's e-mail on stdin: answer "none".
            done = subprocess.run(cmd, input=b"\n", stdout=out, stderr=subprocess.STDOUT, env=env, timeout=600)
    finally:
        passfile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise TrytonServerError(f"trytond-admin failed ({done.returncode}): {_tail(log)}")


def init_database(directory: Path, database: str, password: str, modules: tuple[str, ...] = MODULES) -> Path:
    """Create ``<directory>/<database>.sqlite`` with ``modules`` (and their dependencies) activated.

    Runs ``trytond-admin -c <conf> -d <database> --all --activate-dependencies -u <modules>``.
    """
    conf = write_config(directory)
    db_file = directory / f"{database}.sqlite"
    db_file.unlink(missing_ok=True)
    # trytond's SQLite backend refuses to open a database whose file does not exist yet.
    db_file.touch()
    log = directory / "trytond-admin.log"
    _run_admin(conf, database, password, log, "--all", "--activate-dependencies", "-u", *modules)
    return db_file


def copy_database(template: Path, directory: Path, database: str) -> Path:
    """Copy a template ``.sqlite`` file to ``<directory>/<database>.sqlite`` (side files left behind)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{database}.sqlite"
    for suffix in _SIDE_FILES:
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(template, target)
    return target


@dataclass
class TrytonTemplate:
    """An initialised database file, copied for every server."""

    db_file: Path
    database: str
    admin_password: str = field(repr=False)

    @classmethod
    def create(cls, directory: Path, database: str = "crossdock", password: str | None = None) -> TrytonTemplate:
        password = password or secrets.token_urlsafe(18)
        return cls(init_database(directory, database, password), database, password)

    @classmethod
    def load_or_create(cls, directory: Path, database: str = "crossdock") -> TrytonTemplate:
        """Reuse the template kept in ``directory`` (for ``--systems tryton`` runs), else build it.

        The admin password of this local, loopback-only database is kept beside it (mode 0600), and
        so are the modules it was built with: a template built with other modules is built again.
        """
        db_file, secret = directory / f"{database}.sqlite", directory / f".{database}.admin"
        modules = directory / f".{database}.modules"
        wanted = " ".join(MODULES)
        if db_file.is_file() and secret.is_file() and modules.is_file() and modules.read_text().strip() == wanted:
            return cls(db_file, database, secret.read_text().strip())
        template = cls.create(directory, database)
        secret.write_text(template.admin_password + "\n")
        secret.chmod(0o600)
        modules.write_text(wanted + "\n")
        return template


@dataclass
class TrytonServer:
    """A running trytond process; ``url`` is its base address, stop it with ``stop()``."""

    url: str
    database: str
    directory: Path
    pid: int
    admin_login: str
    admin_password: str = field(repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def config(self) -> TrytonConfig:
        """Connection settings for the admin user of this server."""
        return TrytonConfig(url=self.url, database=self.database, user=self.admin_login, password=self.admin_password)

    @property
    def log_file(self) -> Path:
        return self.directory / "trytond.log"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server by its PID, SIGKILL it if it has not gone within ``timeout``; any process
        it started goes with it."""
        proc = self._process
        OWNER.release(self.pid)
        if proc is None or proc.poll() is not None:
            return
        stop_tree(self.pid, timeout)
        proc.wait(timeout)  # reaped: nothing is left running, not even a zombie

    def __enter__(self) -> TrytonServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    template: TrytonTemplate, directory: Path, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0
) -> TrytonServer:
    """Copy ``template`` into ``directory`` and serve it with ``trytond -c <conf> -d <database>``."""
    port = port or free_port(host)
    conf = write_config(directory, port=port, host=host)
    copy_database(template.db_file, directory, template.database)
    log = directory / "trytond.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYTOND_")}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*_script("trytond"), "-c", str(conf), "-d", template.database],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = TrytonServer(
        url=f"http://{host}:{port}",
        database=template.database,
        directory=directory,
        pid=proc.pid,
        admin_login=ADMIN_LOGIN,
        admin_password=template.admin_password,
        _process=proc,
    )
    # Stopped when this process exits, even if nobody calls server.stop() (an error, SIGTERM).
    OWNER.adopt(proc.pid, "trytond", stop=server.stop)
    try:
        _wait_until_up(server, proc, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_up(server: TrytonServer, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    body = {"id": 0, "method": "common.server.version", "params": []}
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        while True:
            if proc.poll() is not None:
                raise TrytonServerError(f"trytond exited with {proc.returncode}: {_tail(server.log_file)}")
            try:
                if client.post(f"{server.url}/rpc/", json=body).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TrytonServerError(f"trytond did not answer on {server.url} within {timeout:g}s")
            time.sleep(0.1)


def _tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])[-800:]
