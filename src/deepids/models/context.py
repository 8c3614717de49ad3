"""Any model with entity context: the fitted :class:`~deepids.features.context.EntityContext`
step adds what each source host has been doing to its records before the model sees them.

``deepids train --entity-context`` wraps the chosen model in :class:`ContextDetector`. The step
is saved in ``model.json`` with the model; its per-entity state is part of the history that
``score``, ``serve`` and ``stream`` carry from chunk to chunk, so the three give a record the
same context, and the same score.
"""

from __future__ import annotations

import polars as pl
import torch

from deepids.errors import ConfigError
from deepids.features.context import ContextState, EntityContext
from deepids.models.base import BaseDetector, FitOptions, Scores, embed_members, member_tensors
from deepids.models.params import COMMON, Interval
from deepids.models.registry import model_class, model_from_document, register
from deepids.thresholds import Threshold


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


@register
class ContextDetector(BaseDetector):
    model_name = "context"
    _parameter_constraints = {**COMMON, "detector": [str], "detector_params": [dict, None],
                              "window_seconds": [Interval(float, 0, None, "neither")],
                              "last_flows": [Interval(int, 1, 100_000)], "context_entity": [str],
                              "max_entities": [Interval(int, 1, None), None],
                              "idle_ttl": [Interval(float, 0, None, "neither"), None]}
    _fitted_attribute = "detector_"

    def __init__(self, detector: str = "lstm-ae", detector_params: dict | None = None,
                 window_seconds: float = 60.0, last_flows: int = 20, context_entity: str = "src_ip",
                 max_entities: int | None = 100_000, idle_ttl: float | None = 3600.0,
                 seed: int = 0, device: str | None = None, verbose: bool = True):
        self.detector = detector
        self.detector_params = detector_params
        self.window_seconds = window_seconds
        self.last_flows = last_flows
        self.context_entity = context_entity
        self.max_entities = max_entities
        self.idle_ttl = idle_ttl
        self.seed = seed
        self.device = device
        self.verbose = verbose
        self.threshold_ = None
        self.training_summary_ = {}

    def _inner(self) -> BaseDetector:
        """The unfitted model the context feeds, built from its name and parameters."""
        if self.detector == self.model_name:
            raise ConfigError("context: the model inside cannot be another context model")
        cls = model_class(self.detector)
        common = {k: getattr(self, k) for k in ("seed", "device", "verbose") if k in cls._param_names()}
        try:
            return cls(**{**common, **(self.detector_params or {})})
        except TypeError as exc:         # a parameter the inner model does not take
            raise ConfigError(f"context: {self.detector}: {exc}") from None

    def _validate_params(self) -> None:
        super()._validate_params()
        self._inner()._validate_params()

    def _check_training_data(self, X: pl.DataFrame, y=None) -> None:
        self._inner()._check_training_data(X, y)

    def _fit(self, X: pl.DataFrame, y, options: FitOptions) -> None:
        self.context_ = EntityContext(float(self.window_seconds), self.last_flows, self.context_entity,
                                      self.max_entities, self.idle_ttl).fit(X)
        enriched = self.context_.transform(X, self.context_.new_state())
        inner = self._inner()
        inner.fit(enriched, y, **options.as_kwargs())
        self.detector_ = inner
        self.feature_names_ = list(getattr(inner, "feature_names_", []))
        self.input_columns_ = list(dict.fromkeys(
            [c for c in getattr(inner, "input_columns_", []) if not c.startswith("ctx_")]
            + [c for c in self.context_.input_columns if c in X.columns]))
        self.training_summary_ = {**inner.training_summary_, "entity_context": self.context_.to_dict()}

    def _uncalibrated_threshold(self) -> Threshold:
        return self.detector_.threshold_            # the inner model's score and threshold

    @property
    def preprocessor_(self):
        return getattr(getattr(self, "detector_", None), "preprocessor_", None)

    @property
    def entity(self):
        return getattr(getattr(self, "detector_", None), "entity", None)

    @property
    def text_columns_(self) -> list[str]:
        inner = getattr(self.detector_, "text_columns_", None) or []
        return sorted(set(inner) | {c for c in (self.context_entity, "dst_ip") if c in self.input_columns_})

    def set_threshold(self, *args, **kwargs):
        self.threshold_ = self.detector_.set_threshold(*args, **kwargs)
        return self.threshold_

    def new_history(self) -> ContextHistory:
        self._check_fitted()
        return ContextHistory(self.context_.new_state(), self.detector_.new_history())

    def _score_records(self, X: pl.DataFrame) -> Scores:
        return self._score_chunk(X, self.new_history())

    def _score_chunk(self, X: pl.DataFrame, history=None) -> Scores:
        if history is None:
            history = self.new_history()
        enriched = self.context_.transform(X, history.context)
        return self.detector_.score_chunk(enriched, history.inner)

    # ------------------------------------------------------------- persistence
    def _state(self) -> dict:
        docs, _ = embed_members([self.detector_])
        return {"context": self.context_.to_dict(), "detector": docs[0],
                "feature_names": self.feature_names_, "input_columns": self.input_columns_}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return embed_members([self.detector_])[1]

    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.context_ = EntityContext.from_dict(state["context"])
        self.detector_ = model_from_document(state["detector"], member_tensors(tensors, 0), "context detector")
        self.feature_names_ = list(state.get("feature_names", []))
        self.input_columns_ = list(state.get("input_columns", []))
