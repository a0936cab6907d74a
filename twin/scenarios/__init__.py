"""Scenario files shipped with Crossdock.

``EXAMPLE`` is the contracts' example scenario (``shared/contracts/example-scenario.json``), copied
into the package so that the tests, the README's commands and ``crossdock scenario run`` need
nothing outside this repository.
"""

from pathlib import Path

EXAMPLE = Path(__file__).resolve().with_name("example.json")
