"""A real trytond on 127.0.0.1: the fixtures live in ``harness`` (shared with the connector contract
tests); the session template comes from ``tests/integration/conftest.py``."""

from __future__ import annotations

from .harness import EXAMPLE, Tryton, tryton, tryton_server

__all__ = ["EXAMPLE", "Tryton", "tryton", "tryton_server"]
