"""Any model with entity context: the fitted :class:`~deepids.features.context.EntityContext`
step adds what each source host has been doing to its records before the model sees them.

``deepids train --entity-context`` wraps the chosen model in :class:`ContextDetector`. The step
is saved in ``model.json`` with the model; its per-entity state is part of the history that
``score``, ``serve`` and ``stream`` carry from chunk to chunk, so the three give a record the
same context, and the same score.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from deepids.errors import ConfigError
from deepids.features.context import ContextState, EntityContext
from deepids.models.base import BaseDetector, Scores, check_table, embed_members, member_tensors


class ContextHistory:
    """The context step's state and the inner model's own history, carried together.

    ``max_entities``/``idle_ttl`` set by a live scorer bound the inner history; the context
    state keeps the bounds it was fitted with, so a stream forgets exactly as a file does."""

    def __init__(self, context: ContextState, inner):
        self.context = context
        self.inner = inner

    @property
    def tails(self):
        return self.context.entities

    @property
    def evicted_lru(self) -> int:
        return self.context.evicted_lru

    @property
    def evicted_idle(self) -> int:
        return self.context.evicted_idle

    def __setattr__(self, name, value):
        if name in ("max_entities", "idle_ttl"):
            if self.inner is not None and hasattr(self.inner, name):
                setattr(self.inner, name, value)
            return
        object.__setattr__(self, name, value)


class ContextDetector(BaseDetector):
    model_name = "context"

    def __init__(self, detector: str = "lstm-ae", detector_params: dict | None = None,
                 window_seconds: float = 60.0, last_flows: int = 20, context_entity: str = "src_ip",
                 max_entities: int | None = 100_000, idle_ttl: float | None = 3600.0):
        self.detector = detector
        self.detector_params = detector_params
        self.window_seconds = window_seconds
        self.last_flows = last_flows
        self.context_entity = context_entity
        self.max_entities = max_entities
        self.idle_ttl = idle_ttl
        self.threshold_ = None
        self.training_summary_ = {}

    def fit(self, X: pl.DataFrame, y=None) -> "ContextDetector":
        from deepids.models import MODELS

        X = check_table(X)
        if self.detector not in MODELS or self.detector == self.model_name:
            raise ConfigError(f"unknown model {self.detector!r}; available: "
                              f"{', '.join(m for m in MODELS if m != self.model_name)}")
        self.context_ = EntityContext(self.window_seconds, self.last_flows, self.context_entity,
                                      self.max_entities, self.idle_ttl).fit(X)
        enriched = self.context_.transform(X, self.context_.new_state())
        self.detector_ = MODELS[self.detector](**(self.detector_params or {}))
        self.detector_.fit(enriched, y)
        self.threshold_ = self.detector_.threshold_
        self.feature_names_ = list(getattr(self.detector_, "feature_names_", []))
        self.input_columns_ = list(dict.fromkeys(
            [c for c in getattr(self.detector_, "input_columns_", []) if not c.startswith("ctx_")]
            + [c for c in self.context_.input_columns if c in X.columns]))
        self.training_summary_ = {**self.detector_.training_summary_, "entity_context": self.context_.to_dict()}
        return self

    @property
    def preprocessor_(self):
        return getattr(self.detector_, "preprocessor_", None)

    @property
    def entity(self):
        return getattr(self.detector_, "entity", None)

    @property
    def text_columns_(self) -> list[str]:
        return sorted(set(getattr(self.detector_, "text_columns_", None) or []) | {self.context_entity, "dst_ip"})

    def set_threshold(self, *args, **kwargs):
        self.threshold_ = self.detector_.set_threshold(*args, **kwargs)
        return self.threshold_

    def new_history(self) -> ContextHistory:
        return ContextHistory(self.context_.new_state(), self.detector_.new_history())

    def score_chunk(self, X: pl.DataFrame, history=None) -> Scores:
        if history is None:
            history = self.new_history()
        enriched = self.context_.transform(check_table(X), history.context)
        return self.detector_.score_chunk(enriched, history.inner)

    def score_records(self, X: pl.DataFrame) -> Scores:
        return self.score_chunk(X, self.new_history())

    def predict(self, X: pl.DataFrame) -> np.ndarray:
        return (self.score_samples(X) > self._threshold_value()).astype(np.int64)

    # ------------------------------------------------------------- persistence
    def _state(self) -> dict:
        docs, _ = embed_members([self.detector_])
        return {"context": self.context_.to_dict(), "detector": docs[0],
                "feature_names": self.feature_names_, "input_columns": self.input_columns_}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return embed_members([self.detector_])[1]

    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        from deepids.models import model_from_document

        self.context_ = EntityContext.from_dict(state["context"])
        self.detector_ = model_from_document(state["detector"], member_tensors(tensors, 0), "context detector")
        self.feature_names_ = list(state.get("feature_names", []))
        self.input_columns_ = list(state.get("input_columns", []))
