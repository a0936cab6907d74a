"""Seals of the audit chain: proof of the chain's head that someone with database access cannot forge.

The hash chain (``runtime.store``) shows any change to an entry, but whoever can write to the
database can also recompute every hash after the entry they changed and move ``audit_head``. A
seal closes that gap: an HMAC-SHA256 over ``(seq, hash)`` of the chain's head, keyed with a secret
held outside the store (``CROSSDOCK_AUDIT_SEAL_KEY`` or ``CROSSDOCK_AUDIT_SEAL_KEY_FILE``). The
store writes one with every append (table ``audit_seals``) and, when ``CROSSDOCK_AUDIT_SEAL_FILE``
is set, appends it as a JSON line to that file too, so that a rewrite of the database that also
rewrites the seals table is still caught by the file (keep it on other storage, append-only:
``chattr +a``, a WORM bucket, a log shipper).

Without a key in development (and in tests) one is generated into ``data_dir/audit_seal.key``
(mode 0600) and that is logged; in production a missing key is an error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from runtime.settings import Settings

log = structlog.get_logger("crossdock.audit")

KEY_FILE_NAME = "audit_seal.key"
MIN_KEY_BYTES = 16


@dataclass(frozen=True)
class Seal:
    """One seal: the chain's entry ``seq`` had hash ``hash``; ``mac`` proves it with the key ``key_id``."""

    seq: int
    hash: str
    mac: str
    key_id: str
    at: datetime

    def json_line(self) -> bytes:
        body = {"seq": self.seq, "hash": self.hash, "mac": self.mac, "key_id": self.key_id, "at": self.at.isoformat()}
        return (json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n").encode()


class SealFileError(ValueError):
    """A line of the seal file that is not a seal."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"seal file line {line}: {message}")
        self.line = line


class AuditSealer:
    """Computes and checks seals with one key, and appends them to the seal file (if any)."""

    def __init__(self, key: bytes, *, file: Path | None = None) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the audit seal key must be at least {MIN_KEY_BYTES} bytes")
        self._key = key
        # Names the key (in each seal) without revealing it: a seal made with another key is
        # reported as such rather than as a forgery.
        self.key_id = hmac.new(key, b"crossdock audit seal key id", hashlib.sha256).hexdigest()[:16]
        self.file = file
        self._fd: int | None = None
        self._fd_lock = threading.Lock()

    def __repr__(self) -> str:  # never the key
        return f"AuditSealer(key_id={self.key_id!r}, file={self.file!r})"

    # ------------------------------------------------------------------ seals

    def mac(self, seq: int, digest: str) -> str:
        """HMAC-SHA256 of ``"<seq>:<hash>"``."""
        return hmac.new(self._key, f"{seq}:{digest}".encode(), hashlib.sha256).hexdigest()

    def seal(self, seq: int, digest: str, at: datetime) -> Seal:
        return Seal(seq=seq, hash=digest, mac=self.mac(seq, digest), key_id=self.key_id, at=at)

    def problem(self, seq: int, digest: str, mac: str, key_id: str) -> str | None:
        """Why this seal is not genuine, or None if it is."""
        if key_id != self.key_id:
            return f"seal {seq} was made with another key (key id {key_id}, this key is {self.key_id})"
        if not hmac.compare_digest(mac, self.mac(seq, digest)):
            return f"seal {seq} has a bad MAC (forged or altered)"
        return None

    # ------------------------------------------------------------------ the seal file

    def append_to_file(self, seals: Iterable[Seal]) -> None:
        """Append seals to the seal file, one JSON line each (one ``write`` per line, O_APPEND)."""
        if self.file is None:
            return
        with self._fd_lock:
            if self._fd is None:
                self.file.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            for seal in seals:
                os.write(self._fd, seal.json_line())

    def file_seals(self) -> Iterator[Seal]:
        """The seals of the seal file, in file order. A torn last line (a crash mid-write) is skipped;
        any other line that is not a seal raises :class:`SealFileError`."""
        if self.file is None or not self.file.exists():
            return
        with self.file.open("rb") as fh:
            lineno = 0
            for raw in fh:
                lineno += 1
                if not raw.endswith(b"\n"):
                    return  # the last line, written only in part
                if not raw.strip():
                    continue
                try:
                    body = json.loads(raw)
                    yield Seal(
                        seq=int(body["seq"]),
                        hash=str(body["hash"]),
                        mac=str(body["mac"]),
                        key_id=str(body["key_id"]),
                        at=datetime.fromisoformat(body["at"]),
                    )
                except (ValueError, KeyError, TypeError) as exc:
                    raise SealFileError(lineno, f"not a seal ({exc})") from None

    def close(self) -> None:
        with self._fd_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # ------------------------------------------------------------------ from the settings

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditSealer:
        return cls(seal_key(settings), file=settings.audit_seal_file)


def seal_key(settings: Settings) -> bytes:
    """The seal key: ``CROSSDOCK_AUDIT_SEAL_KEY``, else the first line of
    ``CROSSDOCK_AUDIT_SEAL_KEY_FILE``, else (not in production) ``data_dir/audit_seal.key``,
    generated with mode 0600 the first time."""
    if settings.audit_seal_key is not None:
        return settings.audit_seal_key.get_secret_value().encode()
    if settings.audit_seal_key_file is not None:
        try:
            lines = settings.audit_seal_key_file.read_text().splitlines()
        except OSError as exc:
            raise ValueError(f"CROSSDOCK_AUDIT_SEAL_KEY_FILE cannot be read: {exc.strerror}") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise ValueError("CROSSDOCK_AUDIT_SEAL_KEY_FILE is empty")
        return key.encode()
    if settings.env == "production":
        raise ValueError("set CROSSDOCK_AUDIT_SEAL_KEY or CROSSDOCK_AUDIT_SEAL_KEY_FILE: the audit seal key")
    return _development_key(settings.data_dir / KEY_FILE_NAME)


def _development_key(path: Path) -> bytes:
    """Read ``path``, or create it (0600) with a random key; safe when several processes race."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (secrets.token_hex(32) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic, and fails if another process got there first
            log.warning("audit seal key generated", path=str(path), hint="set CROSSDOCK_AUDIT_SEAL_KEY(_FILE)")
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_text().strip()
    if not key:
        raise ValueError(f"the audit seal key file {path} is empty")
    return key.encode()
