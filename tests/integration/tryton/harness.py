"""Fixture functions for a real trytond, shared by ``tests/integration/tryton/`` and the connector
contract tests one directory up (``tests/integration/test_connector_contract.py``).

The database is initialised once per session (about 20 s) into a template file (the
``tryton_template`` fixture, registered in ``tests/integration/conftest.py`` so every module shares
it), and every test module that uses ``tryton_server`` serves its own copy of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bench.tryton_server import TrytonServer, TrytonTemplate, start_server
from connectors.tryton.adapters import Overlay, TrytonErp, TrytonOms, TrytonWms, tryton_connectors
from connectors.tryton.loader import LoadResult, load_scenario
from connectors.tryton.rpc import TrytonClient
from twin.scenarios import EXAMPLE


@dataclass
class Tryton:
    server: TrytonServer
    client: TrytonClient
    loaded: LoadResult
    scenario: dict[str, Any]
    wms: TrytonWms
    erp: TrytonErp
    oms: TrytonOms


@pytest.fixture(scope="session")
def tryton_template(tmp_path_factory: pytest.TempPathFactory) -> TrytonTemplate:
    # load_or_create keeps the admin password beside the file, so the directory also serves as
    # the cache of a `--systems tryton` run.
    return TrytonTemplate.load_or_create(tmp_path_factory.mktemp("tryton-template"))


@pytest.fixture(scope="module")
def tryton_server(tryton_template: TrytonTemplate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrytonServer]:
    server = start_server(tryton_template, tmp_path_factory.mktemp("tryton-server"))
    try:
        yield server
    finally:
        server.stop()
    with pytest.raises(ProcessLookupError):  # stopped by its PID: nothing is left running
        os.kill(server.pid, 0)


@pytest.fixture(scope="module")
def tryton(tryton_server: TrytonServer) -> Iterator[Tryton]:
    """The example scenario loaded into the module's server, and the three adapters on it."""
    scenario: dict[str, Any] = json.loads(EXAMPLE.read_text())
    client = TrytonClient(tryton_server.config())
    loaded = load_scenario(client, scenario)
    wms, erp, oms = tryton_connectors(client, Overlay.from_scenario(scenario))
    try:
        yield Tryton(tryton_server, client, loaded, scenario, wms, erp, oms)
    finally:
        client.close()
