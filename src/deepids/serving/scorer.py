"""The live scorer shared by `deepids serve` and `deepids stream`.

`LiveScorer` wraps any trained detector: it canonicalises incoming records (rejecting bad ones
with a reason), scores the good ones with the detector's `score_chunk` and one long-lived
per-entity history, and counts everything in `ServingMetrics`. Scoring one record at a time,
in micro-batches, or a whole file at once gives the same scores, because the history carries
each entity's last records from batch to batch (bounded by `max_entities` with LRU eviction
and by `idle_ttl`).

A model trained on Windows event logs (its inputs are `event_features`) is recognised at
construction: its records are Windows events (flat NXLog or nested Winlogbeat JSON), turned
into canonical events by `io.logs.events_from_records` and into features by `event_features`,
each scored on its own. The flow path is not touched by that choice.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import polars as pl

from deepids.errors import ConfigError
from deepids.io.records import CanonicalRecords, Rejection, records_to_table
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

    def results(self) -> list[dict]:
        """One JSON-ready entry per scored record."""
        thr = self.threshold
        return [{"index": int(i), "score": _finite(s), "is_anomaly": bool(a), "threshold": thr, "top_features": t}
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
        self.threshold = float(detector._threshold_value())
        self.required, self.text_columns, self.optional = input_spec(detector)
        self.top_k = top_k
        self.name = name or getattr(detector, "model_name", type(detector).__name__)
        self.history = detector.new_history()
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
        # the kind of record the model reads is decided once: flows (the default path) or
        # Windows events (a model trained on `event_features`)
        from deepids.features.events import is_log_model

        self.kind = "logs" if is_log_model(self.required) else "flows"
        self.event_context = None
        if self.kind == "logs":
            self.canonicalise = self._canonicalise_events
            context = getattr(detector, "feature_context_", None)
            if context:      # process-tree context: its process table is carried from batch to batch
                from deepids.features.events import EventContext

                self.event_context = EventContext.from_dict(context)

    # --------------------------------------------------------------- steps
    def canonicalise(self, items: Sequence[Any]) -> CanonicalRecords:
        """Records -> canonical table; rejections are counted."""
        canon = records_to_table(items, self.required, self.text_columns, optional_text=self.optional)
        self.metrics.count_received(len(items))
        if canon.rejected:
            self.metrics.count_rejected(canon.rejected)
        return canon

    def _canonicalise_events(self, items: Sequence[Any]) -> CanonicalRecords:
        """Windows events -> the model's per-event features, plus `timestamp`, `host` and `user_name`
        (the canonical event's, for alerts); rejections are counted."""
        from deepids.features.events import event_features
        from deepids.io.logs import events_from_records

        events, index, rejected = events_from_records(items)
        if self.event_context is not None:
            with self._lock:
                features = self.event_context.features(events)
        else:
            features = event_features(events)
        table = features.with_columns(
            events.get_column("timestamp"), events.get_column("host"),
            events.get_column("user").alias("user_name"))
        self.metrics.count_received(len(items))
        if rejected:
            self.metrics.count_rejected(rejected)
        return CanonicalRecords(table, index, rejected)

    def score_table(self, table: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        """(score, is_anomaly, top_features) for a canonical table, carrying per-entity state."""
        if table.height == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=bool), []
        with self._lock:
            scores = self.detector.score_chunk(table, self.history)
        score = np.asarray(scores.score, dtype=np.float64)
        flagged = score > self.threshold
        top = scores.top_features(self.top_k) if hasattr(scores, "top_features") else [[] for _ in score]
        self.metrics.count_scored(len(score), int(flagged.sum()))
        return score, flagged, top

    def score(self, items: Sequence[Any]) -> ScoredBatch:
        """Canonicalise and score records in one go."""
        canon = self.canonicalise(items)
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
            "records": "windows-events" if self.kind == "logs" else "flows",
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
