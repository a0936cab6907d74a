"""Network versions (lanes, carriers, regions, substitutes, safety stock for a Tryton ERP): every
network put in force is one ``network.changed`` entry in the audit chain, as policy changes are
(``runtime.policy_versions``).

The entry (subject ``network``) carries ``{version, actor, reason, source, digest, network}``.
Versions are numbered 1, 2, … and each number is claimed with the audit log's dedup key
(``network.changed:v<n>``), so two processes starting at once cannot record the same version twice.

Which network is in force at start-up (``network_in_force``):

- ``CROSSDOCK_NETWORK_FILE`` set and its content differs from the last version recorded from that
  file (or none was): the file is validated and recorded as the next version, then used.
- Otherwise the chain's latest version is used (the file, unchanged, or a later version recorded
  by ``record`` from another source), or, with no version at all, the file's content.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from connectors.tryton.network_file import NetworkSpec, load, validate
from runtime.policy_versions import AuditLog, entries
from runtime.store import AuditEntry

KIND = "network.changed"
SUBJECT = "network"
_LOCK = threading.Lock()


NetworkStore = AuditLog


class NetworkVersion(BaseModel):
    version: int
    at: datetime
    actor: str
    reason: str | None
    source: str
    digest: str
    network: dict[str, Any]
    seq: int

    @classmethod
    def of(cls, entry: AuditEntry) -> NetworkVersion:
        p = entry.payload
        return cls(
            version=int(p["version"]),
            at=entry.at,
            actor=str(p.get("actor", entry.actor)),
            reason=p.get("reason"),
            source=str(p.get("source", "")),
            digest=str(p.get("digest", "")),
            network=p.get("network", {}),
            seq=entry.seq,
        )

    def spec(self) -> NetworkSpec:
        return validate(self.network, f"network version {self.version}")


def history(store: NetworkStore) -> list[NetworkVersion]:
    """Every version, oldest first, from the audit chain."""
    return [NetworkVersion.of(e) for e in entries(store, KIND, SUBJECT)]


def record(
    store: NetworkStore, spec: NetworkSpec, actor: str, reason: str | None, source: str
) -> NetworkVersion | None:
    """Record ``spec`` as the next version; None when it is already the one in force."""
    digest = spec.digest()
    with _LOCK:
        for _ in range(20):
            versions = history(store)
            latest = versions[-1] if versions else None
            if latest is not None and latest.digest == digest:
                return None
            number = (latest.version if latest else 0) + 1
            payload = {
                "version": number,
                "actor": actor,
                "reason": reason,
                "source": source,
                "digest": digest,
                "network": spec.dump(),
            }
            entry = store.append_audit(KIND, SUBJECT, actor, payload, dedup_key=f"{KIND}:v{number}")
            if entry.payload != json.loads(json.dumps(payload)):
                continue  # another process took this number meanwhile: read the chain again
            return NetworkVersion.of(entry)
    raise RuntimeError("could not claim a network version after 20 attempts")


def network_in_force(store: NetworkStore, path: Path | None) -> tuple[NetworkSpec | None, NetworkVersion | None]:
    """The network to use at start-up and the version just recorded (None if nothing new);
    raises ``connectors.tryton.network_file.NetworkFileError`` for a bad file."""
    versions = history(store)
    if path is not None:
        spec = load(path)
        source = f"file:{path.resolve()}"
        from_file = [v for v in versions if v.source == source]
        if not from_file or from_file[-1].digest != spec.digest():
            recorded = record(store, spec, "system:network-file", "CROSSDOCK_NETWORK_FILE changed", source)
            return spec, recorded
        if versions[-1].source == source:
            return spec, None
    if versions:
        return versions[-1].spec(), None
    return None, None
