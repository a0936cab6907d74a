"""Named API keys for a running test stack: what ``CROSSDOCK_API_KEYS="key:role:name"`` or a keys
file gives a real deployment, added to the stack's settings (the API reads them per request)."""

from __future__ import annotations

import secrets

from runtime.settings import KeyHolder, Role, hash_key
from tests.integration.conftest import Stack


def add_key(stack: Stack, name: str, role: Role, customers: tuple[str, ...] = ()) -> dict[str, str]:
    """A new key held by ``name``; its request headers."""
    key = secrets.token_urlsafe(18)
    settings = stack.container.settings
    hashed = hash_key(key)
    settings.key_hashes[hashed] = role
    settings.key_holders[hashed] = KeyHolder(name=name, role=role, customers=customers)
    return {"Authorization": f"Bearer {key}"}
