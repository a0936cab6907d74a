"""The triage override model: how often planners override a kind of triage decision.

Training data are past ``exception_triage`` decisions in the decision store and what the
humans did with them:

* **overridden** (label 1): ``rejected`` by a planner, or marked ``evidence.human_outcome ==
  "changed"`` (approved after a change);
* **kept** (label 0): ``executed`` — approved by a planner or executed within policy and not
  reverted.

Pending, observed and failed decisions say nothing about a planner's judgement and are left
out. Each decision's features are the ones the engine recorded in ``evidence["features"]``
(play, reason, log cost, log quantity, express, gold, grouped), so training and prediction
see the same encoding.

The model is a scikit-learn ``LogisticRegression`` (L2, ``class_weight="balanced"``). It is
saved as JSON coefficients, not a pickle: loading a model file never runs code, and the
engine evaluates it without scikit-learn (``domain.engines.triage.OverrideModel``). With
fewer than ``MIN_SAMPLES`` decisions, or only one class, the saved model is the smoothed
base rate (an intercept only).

scikit-learn (the ``learn`` extra) is imported only to train and save a model, never to load
one: the API and the worker import this module, and scikit-learn and SciPy take a second to
import.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from domain.decisions import Decision
from domain.engines.triage import OverrideModel
from domain.extras import check, needs
from runtime.store import Store

MODEL_FORMAT = "crossdock-triage-override/1"
MIN_SAMPLES = 20
PRIOR_WEIGHT = 2.0  # pseudo-decisions at the prior rate when smoothing a base rate
PRIOR_RATE = 0.1
PAGE = 1000


@dataclass(frozen=True)
class TrainReport:
    path: str
    samples: int
    overridden: int
    kind: str  # "logistic" or "base_rate"
    sklearn_version: str


def sklearn_version() -> str:
    """The installed scikit-learn's version (``MissingExtra`` without the ``learn`` extra)."""
    with needs("learn"):
        import sklearn

    return str(sklearn.__version__)


def label_of(decision: Decision) -> int | None:
    """1 overridden, 0 kept, None when the decision says nothing about a human's judgement."""
    if decision.evidence.get("human_outcome") == "changed" or decision.status == "rejected":
        return 1
    if decision.status == "executed":
        return 0
    return None


def examples(decisions: Iterable[Decision]) -> tuple[list[dict[str, float]], list[int]]:
    feats: list[dict[str, float]] = []
    labels: list[int] = []
    for d in decisions:
        if d.workflow != "exception_triage":
            continue
        y = label_of(d)
        raw = d.evidence.get("features")
        if y is None or not isinstance(raw, dict):
            continue
        feats.append({str(k): float(v) for k, v in raw.items() if isinstance(v, int | float)})
        labels.append(y)
    return feats, labels


def train(features: Sequence[dict[str, float]], labels: Sequence[int], c: float = 1.0) -> OverrideModel:
    """Fit the override model (or the smoothed base rate when the data cannot support one)."""
    n, pos = len(labels), sum(labels)
    if n < MIN_SAMPLES or pos == 0 or pos == n:
        rate = (pos + PRIOR_WEIGHT * PRIOR_RATE) / (n + PRIOR_WEIGHT)
        return OverrideModel(features=(), coef=(), intercept=math.log(rate / (1 - rate)), samples=n)
    with needs("learn"):
        from sklearn.linear_model import LogisticRegression

    names = tuple(sorted({k for f in features for k in f}))
    x = np.array([[f.get(k, 0.0) for k in names] for f in features], dtype=float)
    y = np.array(labels, dtype=int)
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=1000)
    clf.fit(x, y)
    coef = tuple(float(v) for v in clf.coef_[0])
    return OverrideModel(features=names, coef=coef, intercept=float(clf.intercept_[0]), samples=n)


def save_model(model: OverrideModel, path: Path | str) -> None:
    doc = {
        "format": MODEL_FORMAT,
        "sklearn_version": sklearn_version(),
        "samples": model.samples,
        "features": list(model.features),
        "coef": list(model.coef),
        "intercept": model.intercept,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(target)


def load_model(path: Path | str) -> OverrideModel | None:
    """The model saved at ``path``, or None when there is none (the engine then uses its prior)."""
    target = Path(path)
    if not target.is_file():
        return None
    doc: dict[str, Any] = json.loads(target.read_text())
    if doc.get("format") != MODEL_FORMAT:
        raise ValueError(f"{target}: not a triage override model (format {doc.get('format')!r})")
    features = tuple(str(f) for f in doc["features"])
    coef = tuple(float(c) for c in doc["coef"])
    if len(features) != len(coef):
        raise ValueError(f"{target}: {len(features)} features but {len(coef)} coefficients")
    return OverrideModel(features=features, coef=coef, intercept=float(doc["intercept"]), samples=int(doc["samples"]))


def decisions_of(store: Store) -> list[Decision]:
    """Every exception_triage decision in the store, paged."""
    out: list[Decision] = []
    offset = 0
    while True:
        page = store.list_decisions(workflow="exception_triage", limit=PAGE, offset=offset)
        out.extend(page)
        if len(page) < PAGE:
            return out
        offset += PAGE


def retrain_from_store(store: Store, path: Path | str) -> TrainReport:
    """Train on the store's triage decisions and their human outcomes; save the model to ``path``."""
    check("learn")  # before reading the store: a missing extra is the first thing to say
    feats, labels = examples(decisions_of(store))
    model = train(feats, labels)
    save_model(model, path)
    return TrainReport(
        path=str(path),
        samples=len(labels),
        overridden=sum(labels),
        kind="logistic" if model.features else "base_rate",
        sklearn_version=sklearn_version(),
    )
