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
from deepids.models.base import BaseDetector, FitOptions, Scores, embed_members, member_tensors
from deepids.models.params import COMMON, Interval
from deepids.models.registry import MODELS, model_class, model_from_document, register
from deepids.thresholds import Threshold


@register
class TwoStageDetector(BaseDetector):
    model_name = "two-stage"
    _parameter_constraints = {**COMMON, "detector": [str], "classifier": [str],
                              "min_confidence": [Interval(float, 0, 1)], "detector_params": [dict, None],
                              "classifier_params": [dict, None]}
    _fitted_attribute = "classifier_"

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

    def _stages(self) -> tuple[BaseDetector, BaseDetector]:
        """Unfitted stage one and stage two, built from their names and parameters."""
        from deepids.models.supervised import BaseClassifier

        def build(name: str, params: dict) -> BaseDetector:
            cls = model_class(name)
            common = {k: getattr(self, k) for k in ("seed", "device", "verbose") if k in cls._param_names()}
            try:
                return cls(**{**common, **params})
            except TypeError as exc:         # a parameter the stage's model does not take
                raise ConfigError(f"two-stage: {name}: {exc}") from None

        detector = build(self.detector, self.detector_params or {})
        classifier = build(self.classifier, {"target": "family", **(self.classifier_params or {})})
        if not isinstance(classifier, BaseClassifier):
            choices = ", ".join(n for n, c in MODELS.items() if issubclass(c, BaseClassifier))
            raise ConfigError(f"stage two must be a classifier ({choices}), not {self.classifier!r}")
        return detector, classifier

    def _validate_params(self) -> None:
        super()._validate_params()
        for stage in self._stages():
            stage._validate_params()

    def _check_training_data(self, X: pl.DataFrame, y=None) -> None:
        if y is None and LABEL not in X.columns:
            raise SchemaError("the two-stage model needs labels: stage two learns attack families "
                              "(name the label column with --label-column)")
        self._stages()[0]._check_training_data(X, y)

    def _fit(self, X: pl.DataFrame, y, options: FitOptions) -> None:
        if y is not None:
            X = X.with_columns(pl.Series(LABEL, np.asarray(y, dtype=object).astype(str)))
        self.detector_, classifier = self._stages()
        # a detector learns benign traffic; a binary classifier both classes
        self.detector_.fit(X, **options.sub("stage1").as_kwargs())
        attacks = X.filter(pl.col(LABEL) != BENIGN)
        families = sorted(set(attack_families(attacks.get_column(LABEL).to_numpy()).tolist()))
        if len(families) < 2:
            raise SchemaError(f"stage two needs at least two attack families to tell apart, got {families}")
        self.classifier_ = classifier.fit(attacks, **options.sub("stage2").as_kwargs())
        self.training_summary_ = {"records": X.height, "attack_records": attacks.height, "families": families,
                                  "stage_one": self.detector_.training_summary_,
                                  "stage_two": self.classifier_.training_summary_}

    def _uncalibrated_threshold(self) -> Threshold:
        return self.detector_.threshold_            # the score and its threshold are stage one's

    def _names(self, X: pl.DataFrame, flagged: np.ndarray) -> np.ndarray:
        names = np.full(X.height, BENIGN, dtype=object)
        if flagged.any():
            proba = self.classifier_.predict_proba(X.filter(pl.Series(flagged)))
            best = proba.argmax(axis=1)
            named = np.asarray(self.classifier_.classes_, dtype=object)[best]
            names[flagged] = np.where(proba[np.arange(len(best)), best] >= self.min_confidence, named, UNKNOWN_ANOMALY)
        return names

    def _score_records(self, X: pl.DataFrame) -> Scores:
        return self._with_names(X, self.detector_.score_records(X))

    def _score_chunk(self, X: pl.DataFrame, history=None) -> Scores:
        return self._with_names(X, self.detector_.score_chunk(X, history))

    def _with_names(self, X: pl.DataFrame, stage_one: Scores) -> Scores:
        stage_one.predicted = self._names(X, stage_one.score > self.threshold_.value)
        return stage_one

    def new_history(self):
        self._check_fitted()
        return self.detector_.new_history()

    def _state(self) -> dict:
        return {"stages": embed_members([self.detector_, self.classifier_])[0]}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return embed_members([self.detector_, self.classifier_])[1]

    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.detector_, self.classifier_ = [model_from_document(doc, member_tensors(tensors, k), f"stage {k + 1}")
                                            for k, doc in enumerate(state["stages"])]
