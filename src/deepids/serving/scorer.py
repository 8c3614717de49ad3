"""The live scorer shared by `deepids serve` and `deepids stream`.

`LiveScorer` wraps any trained detector: it canonicalises incoming records (rejecting bad ones
with a reason), scores the good ones with the detector's `score_chunk` and one long-lived
per-entity history, and counts everything in `ServingMetrics`. Scoring one record at a time,
in micro-batches, or a whole file at once gives the same scores, because the history carries
each entity's last records from batch to batch (bounded by `max_entities` with LRU eviction
and by `idle_ttl`).

The record kind the model reads (`deepids.kinds.kind_of_model`: flows, or Windows events for a
model trained on `event_features`) canonicalises the records, and the one scorer
(`deepids.scoring.ChunkScorer`) scores them, as for files: the kind's model inputs, the model's
per-entity history and the kind's state, carried from batch to batch in scoring order. Results
use the score frame's names (`deepids.scoring.SCORE_FIELDS`): ``record`` is the record's position
in the input (a request body, or the stream since it started).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import polars as pl

from deepids.errors import ConfigError
from deepids.io.records import CanonicalRecords, Rejection
from deepids.scoring import RECORD, ChunkScorer
from deepids.serving.metrics import ServingMetrics

R_OVERLOADED = "overloaded"


def input_spec(detector) -> tuple[list[str], set[str], list[str]]:
    """(required input columns, those that are text, optional entity columns) of a detector."""
    pre = getattr(detector, "preprocessor_", None)
    cols = getattr(detector, "input_columns_", None)
    if cols is None and pre is not None:
        cols = pre.input_columns
    if not cols:
        raise ConfigError(f"{type(detector).__name__} does not declare its input columns; is it fitted?")
    text = set(getattr(pre, "categorical_", None) or []) | set(getattr(detector, "text_columns_", None) or [])
    entity = getattr(detector, "entity", None)
    optional = [entity] if isinstance(entity, str) and entity else []
    return list(cols), text, optional


@dataclass
class ScoredBatch:
    """The outcome of scoring some records: who was scored (by input position) and who was refused."""

    index: np.ndarray
    score: np.ndarray
    is_anomaly: np.ndarray
    top_features: list[list[str]]
    threshold: float
    table: pl.DataFrame
    rejected: list[Rejection] = field(default_factory=list)

    def results(self, first: int = 0) -> list[dict]:
        """One JSON-ready entry per scored record (`record`: its position, plus `first`)."""
        thr = self.threshold
        return [{RECORD: first + int(i), "score": _finite(s), "threshold": thr, "is_anomaly": bool(a), "top_features": t}
                for i, s, a, t in zip(self.index.tolist(), self.score.tolist(), self.is_anomaly.tolist(),
                                      self.top_features)]


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


class LiveScorer:
    """Scores records as they arrive with one detector and one bounded per-entity history.

    Thread-safe: scoring calls are serialised, so the per-entity history sees records in the
    order they were scored.
    """

    def __init__(self, detector, *, top_k: int = 3, max_entities: int | None = 100_000,
                 idle_ttl: float | None = 3600.0, metrics: ServingMetrics | None = None,
                 name: str | None = None):
        self.detector = detector
        self.scorer = ChunkScorer(detector, top_k=top_k)
        self.kind = self.scorer.kind
        self.threshold = self.scorer.threshold
        self.required, self.text_columns, self.optional = input_spec(detector)
        self.top_k = top_k
        self.name = name or getattr(detector, "model_name", type(detector).__name__)
        self.history = self.scorer.history
        if self.history is not None and hasattr(self.history, "max_entities"):
            if max_entities is not None and max_entities < 1:
                raise ConfigError(f"max_entities must be at least 1, got {max_entities}")
            if idle_ttl is not None and idle_ttl <= 0:
                raise ConfigError(f"idle_ttl must be positive, got {idle_ttl}")
            self.history.max_entities = max_entities
            self.history.idle_ttl = idle_ttl
        self.max_entities = max_entities
        self.idle_ttl = idle_ttl
        self.metrics = metrics or ServingMetrics()
        self._lock = threading.Lock()

    # --------------------------------------------------------------- steps
    def canonicalise(self, items: Sequence[Any]) -> CanonicalRecords:
        """Records -> the kind's canonical table; rejections are counted."""
        canon = self.kind.canonicalise(items, self.required, self.text_columns, self.optional)
        self.metrics.count_received(len(items))
        if canon.rejected:
            self.metrics.count_rejected(canon.rejected)
        return canon

    def score_table(self, table: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        """(score, is_anomaly, top_features) for a canonical table, carrying per-entity state."""
        if table.height == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=bool), []
        with self._lock:
            scores = self.scorer.scores(table)
        score = np.asarray(scores.score, dtype=np.float64)
        flagged = score > self.threshold
        top = scores.top_features(self.top_k)
        self.metrics.count_scored(len(score), int(flagged.sum()))
        return score, flagged, top

    def score(self, items: Sequence[Any]) -> ScoredBatch:
        """Canonicalise and score records in one go."""
        canon = self.canonicalise(items)
        return self.score_canonical(canon)

    def score_canonical(self, canon: CanonicalRecords) -> ScoredBatch:
        """Score records already canonical (a capture's flows, a file's chunk)."""
        score, flagged, top = self.score_table(canon.table)
        return ScoredBatch(canon.index, score, flagged, top, self.threshold, canon.table, canon.rejected)

    # -------------------------------------------------------------- state
    def state(self) -> dict:
        h = self.history
        return {
            "entities": len(getattr(h, "tails", ())) if h is not None else 0,
            "max_entities": self.max_entities,
            "idle_ttl_seconds": self.idle_ttl,
            "evicted_lru": getattr(h, "evicted_lru", 0),
            "evicted_idle": getattr(h, "evicted_idle", 0),
        }

    def model_info(self) -> dict:
        """The model's metadata: class, version, features, threshold and provenance, training summary."""
        from deepids import __version__
        from deepids.models.base import FORMAT_VERSION, _jsonable

        d = self.detector
        thr = d.threshold_.to_dict() if getattr(d, "threshold_", None) is not None else None
        return _jsonable({
            "model": self.name,
            "class": type(d).__name__,
            "records": self.kind.name,
            "deepids_version": __version__,
            "format_version": FORMAT_VERSION,
            "hyperparameters": d.get_params() if hasattr(d, "get_params") else {},
            "features": list(getattr(d, "feature_names_", []) or []),
            "input_columns": self.required,
            "text_columns": sorted(self.text_columns),
            "entity": self.optional[0] if self.optional else None,
            "threshold": thr,
            "training": getattr(d, "training_summary_", {}) or {},
            "state": {"max_entities": self.max_entities, "idle_ttl_seconds": self.idle_ttl},
        })
