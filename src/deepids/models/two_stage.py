"""Two stages: a detector flags records, then a classifier names the attack family of what it flagged.

Stage one is any model that flags records: a detector trained on benign records (the LSTM
autoencoder by default) or a binary classifier.
Stage two is a family classifier (the DNN by default) trained on the labelled attack records
only, so it answers "which attack", not "whether". A flagged record whose most likely family
has a probability below `min_confidence` comes out as `unknown-anomaly` rather than a forced
guess: an attack family stage two never saw should look like none of those it knows.
The score and threshold are stage one's; `Scores.predicted` holds the final names
("benign", a family, or "unknown-anomaly").
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from deepids.errors import ConfigError, SchemaError
from deepids.features.families import UNKNOWN_ANOMALY, attack_families
from deepids.io.schema import BENIGN, LABEL
from deepids.models.base import BaseDetector, Scores, check_table, embed_members, member_tensors


class TwoStageDetector(BaseDetector):
    model_name = "two-stage"

    def __init__(self, detector: str = "lstm-ae", classifier: str = "dnn", min_confidence: float = 0.6,
                 detector_params: dict | None = None, classifier_params: dict | None = None,
                 seed: int = 0, device: str | None = None, verbose: bool = True):
        self.detector = detector
        self.classifier = classifier
        self.min_confidence = min_confidence
        self.detector_params = detector_params
        self.classifier_params = classifier_params
        self.seed = seed
        self.device = device
        self.verbose = verbose
        self.threshold_ = None
        self.training_summary_ = {}

    def fit(self, X: pl.DataFrame, y=None) -> "TwoStageDetector":
        from deepids.models import MODELS
        from deepids.models.supervised import BaseClassifier

        X = check_table(X)
        if y is not None:
            X = X.with_columns(pl.Series(LABEL, np.asarray(y, dtype=object).astype(str)))
        if LABEL not in X.columns:
            raise SchemaError("the two-stage model needs labels: stage two learns attack families "
                              "(name the label column with --label-column)")
        for name in (self.detector, self.classifier):
            if name not in MODELS:
                raise ConfigError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
        common = {"seed": self.seed, "device": self.device, "verbose": self.verbose}
        self.detector_ = MODELS[self.detector](**{**common, **(self.detector_params or {})})
        self.detector_.fit(X)          # a detector learns benign traffic; a binary classifier both classes
        attacks = X.filter(pl.col(LABEL) != BENIGN)
        families = sorted(set(attack_families(attacks.get_column(LABEL).to_numpy()).tolist()))
        if len(families) < 2:
            raise SchemaError(f"stage two needs at least two attack families to tell apart, got {families}")
        self.classifier_ = MODELS[self.classifier](**{**common, "target": "family",
                                                      **(self.classifier_params or {})})
        if not isinstance(self.classifier_, BaseClassifier):
            raise ConfigError(f"stage two must be a classifier, not {self.classifier!r}")
        self.classifier_.fit(attacks)
        self.threshold_ = self.detector_.threshold_
        self.training_summary_ = {"records": X.height, "attack_records": attacks.height, "families": families,
                                  "stage_one": self.detector_.training_summary_,
                                  "stage_two": self.classifier_.training_summary_}
        return self

    def _names(self, X: pl.DataFrame, flagged: np.ndarray) -> np.ndarray:
        names = np.full(X.height, BENIGN, dtype=object)
        if flagged.any():
            proba = self.classifier_.predict_proba(X.filter(pl.Series(flagged)))
            best = proba.argmax(axis=1)
            named = np.asarray(self.classifier_.classes_, dtype=object)[best]
            names[flagged] = np.where(proba[np.arange(len(best)), best] >= self.min_confidence, named, UNKNOWN_ANOMALY)
        return names

    def score_records(self, X: pl.DataFrame) -> Scores:
        stage_one = self.detector_.score_records(check_table(X))
        return self._with_names(X, stage_one)

    def score_chunk(self, X: pl.DataFrame, history=None) -> Scores:
        return self._with_names(X, self.detector_.score_chunk(X, history))

    def _with_names(self, X: pl.DataFrame, stage_one: Scores) -> Scores:
        stage_one.predicted = self._names(X, stage_one.score > self.threshold_.value)
        return stage_one

    def new_history(self):
        return self.detector_.new_history()

    def _state(self) -> dict:
        return {"stages": embed_members([self.detector_, self.classifier_])[0]}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return embed_members([self.detector_, self.classifier_])[1]

    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        from deepids.models import model_from_document

        self.detector_, self.classifier_ = [model_from_document(doc, member_tensors(tensors, k), f"stage {k + 1}")
                                            for k, doc in enumerate(state["stages"])]
