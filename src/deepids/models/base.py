"""The estimator contract every deepids model keeps, written once here (as PyOD's `BaseDetector`).

Estimators follow scikit-learn / PyOD: hyperparameters are plain `__init__` keywords stored
unchanged, fitted state ends in `_`, `fit(X, y=None)`, `score_samples(X)` (higher = more
anomalous), `predict(X)` (1 = anomaly).

What the base owns, so that a model writes only its network, its loss and its scoring:
- `fit` is a template: the parameters (the threshold's included) are checked against the
  class's `_parameter_constraints` and `_validate_params` before anything is read or trained,
  then the data's fitness for the threshold (best-f1 needs labelled attacks), then the
  model's `_fit` runs, and the threshold is calibrated here, once, on the benign validation
  scores `_fit` returns (and the attack records' scores, for best-f1);
- `score_records`/`score_chunk` check the table and that the model is fitted (`NotFittedError`)
  before the model's `_score_records`/`_score_chunk`;
- save and load: `to_document`/`_from_document`; the format is `models/persistence.py`'s.

`fit(X, y=None, *, progress=None, checkpoint_dir=None, resume=False)`: `progress` is called
after every training epoch with an `EpochReport` (see `models/training.py`); with a
`checkpoint_dir` torch models write a checkpoint there after every epoch, and `resume=True`
continues from it. Models without epochs (the forests) ignore both.
"""

from __future__ import annotations

import inspect
import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import polars as pl
import torch
from safetensors.torch import save_file

from deepids.errors import ConfigError, NotFittedError, SchemaError
from deepids.io.schema import BENIGN, LABEL
from deepids.models.params import validate_parameters
from deepids.models.persistence import FORMAT_VERSION, MODEL_JSON, WEIGHTS, jsonable, read_model_document
from deepids.models.training import TrainingConfig
from deepids.thresholds import Threshold, calibrate_threshold

_jsonable = jsonable          # the name other rooms import
__all__ = ["BaseDetector", "FitOptions", "Scores", "FORMAT_VERSION", "MODEL_JSON", "WEIGHTS", "read_model_document"]


@dataclass
class Scores:
    """What a detector says about each record of a table, in input order."""

    score: np.ndarray                       # (n,) anomaly score, higher = more anomalous
    feature_error: np.ndarray | None = None  # (n, n_features) per-feature contribution to the score
    loss: np.ndarray | None = None           # (n,) the model's training loss for each record
    predicted: np.ndarray | None = None      # (n,) class names, for models that name what they see
    feature_names: list[str] = field(default_factory=list)

    def top_feature_indices(self, k: int = 3) -> np.ndarray:
        """(n, k) column numbers of each record's k largest feature errors, largest first.

        Ties go to the lower column number. k passes of argmax: much cheaper than sorting
        each row when k is small.
        """
        n = len(self.score)
        if self.feature_error is None or k <= 0:
            return np.zeros((n, 0), dtype=np.int64)
        k = min(k, self.feature_error.shape[1])
        if k == 1:
            return np.argmax(self.feature_error, axis=1)[:, None]
        work = np.array(self.feature_error, dtype=np.float32, copy=True)
        work[np.isnan(work)] = -np.inf
        top = np.empty((n, k), dtype=np.int64)
        rows = np.arange(n)
        for j in range(k):
            top[:, j] = np.argmax(work, axis=1)
            if j < k - 1:
                work[rows, top[:, j]] = -np.inf
        return top

    def top_features(self, k: int = 3) -> list[list[str]]:
        top = self.top_feature_indices(k)
        if top.shape[1] == 0:
            return [[] for _ in range(len(self.score))]
        names = np.asarray(self.feature_names, dtype=object)
        return names[top].tolist()


def benign_mask(X: pl.DataFrame, y=None) -> np.ndarray | None:
    """True for benign records, from `y` (labels or 0/1) or the table's `label` column; None if unlabelled."""
    if y is None:
        if LABEL not in X.columns:
            return None
        y = X.get_column(LABEL)
    y = np.asarray(y.to_numpy() if isinstance(y, pl.Series) else y)
    if y.dtype.kind in "iub":
        return y == 0
    return np.asarray([str(v).lower() == BENIGN for v in y]) if y.dtype == object else (y == BENIGN)


def benign_training_rows(X: pl.DataFrame, y=None, minimum: int = 2) -> tuple[pl.DataFrame, np.ndarray | None, int]:
    """What a detector trains on: (benign rows, the benign mask or None if unlabelled, attacks left out)."""
    benign = benign_mask(X, y)
    n_attacks = 0 if benign is None else int((~benign).sum())
    table = X if benign is None else X.filter(pl.Series(benign))
    if table.height < minimum:
        raise SchemaError(f"need at least {minimum} benign records to train, got {table.height}")
    return table, benign, n_attacks


def benign_validation_mask(n_benign: int, fraction: float, seed: int) -> np.ndarray:
    """Which of `n_benign` training records a detector holds back (early stopping, threshold).

    Drawn from `seed`, so models given the same seed hold back the same records; never all, never none.
    """
    rng = np.random.default_rng(seed)
    is_val = rng.random(n_benign) < fraction
    if is_val.all() or not is_val.any():
        is_val[:] = False
        is_val[rng.integers(n_benign)] = True
    return is_val


def attack_labels(X: pl.DataFrame, y=None) -> np.ndarray | None:
    """1 for attack records, 0 for benign; None if unlabelled."""
    mask = benign_mask(X, y)
    return None if mask is None else (~mask).astype(np.int64)


@dataclass
class FitOptions:
    """How a caller runs one `fit`: progress callback, checkpoint directory, resume."""

    progress: Callable | None = None
    checkpoint_dir: str | Path | None = None
    resume: bool = False

    def sub(self, name: str) -> "FitOptions":
        """The options for a member model: its checkpoints in a subdirectory."""
        directory = None if self.checkpoint_dir is None else Path(self.checkpoint_dir) / name
        return FitOptions(self.progress, directory, self.resume)

    def as_kwargs(self) -> dict:
        return {"progress": self.progress, "checkpoint_dir": self.checkpoint_dir, "resume": self.resume}


class BaseDetector(ABC):
    """The contract: parameters, the fit template, calibration, fitted checks, predict, save and load.

    A subclass declares `model_name`, `_parameter_constraints` (every `__init__` keyword), the
    attribute that marks it fitted (`_fitted_attribute`), and writes `_fit`, `_score_records`
    and the persistence hooks `_state`, `_tensors`, `_restore`. Cross-parameter rules go in an
    override of `_validate_params` that calls `super()._validate_params()` first.
    """

    model_name: ClassVar[str] = ""
    _parameter_constraints: ClassVar[dict[str, list]] = {}
    _fitted_attribute: ClassVar[str] = "threshold_"
    threshold_: Threshold | None
    training_summary_: dict

    # ------------------------------------------------------------------ params
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self) -> dict:
        return {name: getattr(self, name) for name in self._param_names()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def _validate_params(self) -> None:
        """Check every parameter (ConfigError naming it); run when `fit` starts and when a model loads."""
        params = self.get_params()
        validate_parameters(self.model_name or type(self).__name__, params, self._parameter_constraints)
        if params.get("threshold_method") == "fixed" and params.get("threshold_value") is None:
            raise ConfigError(f"{self.model_name}: the fixed threshold needs a value (threshold_value, "
                              "--threshold-value)")

    @property
    def calibrates(self) -> bool:
        """True for models whose threshold is chosen on validation scores (they take `threshold_method`)."""
        return "threshold_method" in self._param_names()

    def _check_training_data(self, X: pl.DataFrame, y=None) -> None:
        """What the data must hold for the chosen threshold, checked before training."""
        if self.calibrates and self.threshold_method == "best-f1":
            benign = benign_mask(X, y)
            if benign is None or benign.all():
                raise ConfigError(f"{self.model_name}: the best-f1 threshold needs labelled training data with "
                                  "attack records in it (pick percentile or fpr for unlabelled data)")

    # ------------------------------------------------------------------ fitting
    def fit(self, X: pl.DataFrame, y=None, *, progress: Callable | None = None,
            checkpoint_dir: str | Path | None = None, resume: bool = False) -> "BaseDetector":
        """Check the parameters and data, train (`_fit`), calibrate the threshold; returns self."""
        X = check_table(X)
        self._validate_params()
        self._check_training_data(X, y)
        validation_scores = self._fit(X, y, FitOptions(progress, checkpoint_dir, resume))
        self._calibrate(validation_scores, X, y)
        return self

    @abstractmethod
    def _fit(self, X: pl.DataFrame, y, options: FitOptions) -> np.ndarray | None:
        """Train; return the benign validation records' scores (models that calibrate) or None."""

    def _training_config(self, options: FitOptions, **overrides) -> TrainingConfig:
        """The shared loop's settings from this model's parameters and the caller's fit options."""
        names = ("epochs", "batch_size", "learning_rate", "patience", "seed", "device", "verbose")
        settings = {k: getattr(self, k) for k in names if hasattr(self, k)}
        fingerprint = {"model": self.model_name,
                       **jsonable({k: v for k, v in self.get_params().items()    # what shapes training
                                   if k not in ("epochs", "patience", "verbose", "device")
                                   and not k.startswith("threshold_")}),
                       **jsonable(overrides.pop("fingerprint", {}))}
        progress = options.progress if callable(options.progress) else None    # a bool: the former API, no bar
        return TrainingConfig(**{**settings, **overrides}, progress=progress,
                              checkpoint_dir=options.checkpoint_dir, resume=options.resume, fingerprint=fingerprint)

    def _calibrate(self, validation_scores: np.ndarray | None, X: pl.DataFrame | None, y=None) -> None:
        """Choose the threshold once, here: from the validation scores, or the model's own fixed rule."""
        if not self.calibrates:
            self.threshold_ = self._uncalibrated_threshold()
            return
        if self.threshold_method == "best-f1":
            benign = benign_mask(X, y)
            attack_scores = self._score_records(X.filter(pl.Series(~benign))).score
            self.set_threshold("best-f1", scores=np.concatenate([validation_scores, attack_scores]),
                               y=np.r_[np.zeros(len(validation_scores)), np.ones(len(attack_scores))])
        else:
            self.set_threshold(self.threshold_method, benign_scores=validation_scores,
                               percentile=self.threshold_percentile, fpr=self.threshold_fpr,
                               value=self.threshold_value)

    def _uncalibrated_threshold(self) -> Threshold:
        """The threshold of a model without threshold parameters (classifiers: P(attack) > 0.5)."""
        raise TypeError(f"{type(self).__name__} declares no threshold parameters, so it must define "
                        "_uncalibrated_threshold (the threshold it uses without calibration)")

    # --------------------------------------------------------------- predicting
    def _check_fitted(self) -> None:
        """NotFittedError unless `fit` finished (or the model was loaded): the model's state and its threshold."""
        if getattr(self, self._fitted_attribute, None) is None or getattr(self, "threshold_", None) is None:
            raise NotFittedError(f"this {self.model_name or type(self).__name__} model is not fitted yet: "
                                 "call fit, or load a saved model")

    def score_samples(self, X: pl.DataFrame) -> np.ndarray:
        return self.score_records(X).score

    def score_records(self, X: pl.DataFrame) -> Scores:
        """Scores (and per-feature contributions) for every record of X, in input order."""
        X = check_table(X)
        self._check_fitted()
        return self._score_records(X)

    @abstractmethod
    def _score_records(self, X: pl.DataFrame) -> Scores:
        """The model's scoring of a checked table (the model is fitted)."""

    def score_chunk(self, X: pl.DataFrame, history=None) -> Scores:
        """Score one chunk of a larger input; sequence models carry per-entity state in `history`."""
        X = check_table(X)
        self._check_fitted()
        return self._score_chunk(X, history)

    def _score_chunk(self, X: pl.DataFrame, history) -> Scores:
        return self._score_records(X)

    def new_history(self):
        """Per-entity state for `score_chunk` (None for models that score records alone)."""
        return None

    def predict(self, X: pl.DataFrame) -> np.ndarray:
        return (self.score_samples(X) > self._threshold_value()).astype(np.int64)

    def _threshold_value(self) -> float:
        self._check_fitted()
        return self.threshold_.value

    def set_threshold(self, method: str, *, benign_scores=None, percentile: float = 99.0, fpr: float = 0.01,
                      value: float | None = None, scores=None, y=None) -> Threshold:
        """Choose a threshold on scores (kept apart from fitting); it travels with the saved model."""
        self.threshold_ = calibrate_threshold(method, benign_scores, percentile=percentile, fpr=fpr,
                                              value=value, scores=scores, y=y)
        return self.threshold_

    # ------------------------------------------------ fitted features (models with a preprocessor)
    def _use_preprocessor(self, preprocessor) -> None:
        """Adopt a fitted `FlowPreprocessor`: the input columns and feature names follow from it."""
        self.preprocessor_ = preprocessor
        self.feature_names_ = preprocessor.output_names
        self.input_columns_ = preprocessor.input_columns

    def _feature_state(self) -> dict:
        """The fitted features as saved in `model.json` (see `_restore_features`)."""
        state = {"feature_names": self.feature_names_, "input_columns": self.input_columns_,
                 "preprocessor": self.preprocessor_.to_dict()}
        if getattr(self, "feature_context_", None) is not None:   # fitted state of features before the
            state["feature_context"] = self.feature_context_      # preprocessor (event logs: EventContext)
        return state

    def _restore_features(self, state: dict) -> None:
        from deepids.features.preprocess import FlowPreprocessor

        self.preprocessor_ = FlowPreprocessor.from_dict(state["preprocessor"])
        self.feature_names_ = list(state["feature_names"])
        self.input_columns_ = list(state["input_columns"])
        self.feature_context_ = state.get("feature_context")

    def _load_network(self, build: Callable[[], torch.nn.Module], tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
        """Build the network the saved parameters describe and load `tensors` into it.

        The shapes are compared on torch's `meta` device first, so a description that does not
        match its weights (a layer 28,000 wide in a small file) is refused before any memory is
        allocated for it.
        """
        with torch.device("meta"):
            expected = build().state_dict()
        if set(expected) != set(tensors):
            missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
            raise ValueError(f"the weights do not match the network (missing {missing[:3]}, unexpected {extra[:3]})")
        for name, t in expected.items():
            if tuple(t.shape) != tuple(tensors[name].shape):
                raise ValueError(f"weight {name!r} has shape {tuple(tensors[name].shape)}, the model description "
                                 f"says {tuple(t.shape)}")
        network = build()
        network.load_state_dict(tensors)
        return network.eval()

    # ------------------------------------------------------------- persistence
    @abstractmethod
    def _state(self) -> dict:
        """JSON-ready fitted state besides the weights (feature schema, preprocessing)."""

    @abstractmethod
    def _tensors(self) -> dict[str, torch.Tensor]:
        """The weights to save as safetensors."""

    @abstractmethod
    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Rebuild fitted state from `_state()` and `_tensors()` output."""

    def to_document(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """The model as a JSON-ready document and named CPU tensors (what `save` writes)."""
        from deepids import __version__

        self._check_fitted()
        doc = {
            "format_version": FORMAT_VERSION,
            "deepids_version": __version__,
            "class": type(self).__name__,
            "model": self.model_name,
            "hyperparameters": jsonable(self.get_params()),
            "threshold": self.threshold_.to_dict() if self.threshold_ else None,
            "training": jsonable(self.training_summary_),
            "state": jsonable(self._state()),
        }
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self._tensors().items()}
        return doc, tensors

    def save(self, path: str | Path) -> Path:
        """Write the model directory whole or not at all: it is built beside `path` and swapped in
        once complete, so a failed or interrupted save leaves the model that was there (see
        `deepids.atomic`); files are created 0640."""
        from deepids.atomic import PRIVATE, atomic_dir

        path = Path(path)
        doc, tensors = self.to_document()
        text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
        with atomic_dir(path) as tmp:
            save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "deepids", "class": type(self).__name__})
            (tmp / MODEL_JSON).write_text(text)
            for name in (WEIGHTS, MODEL_JSON):
                os.chmod(tmp / name, PRIVATE)
        return path

    @classmethod
    def _from_document(cls, doc: dict, tensors: dict[str, torch.Tensor]) -> "BaseDetector":
        params = {k: v for k, v in doc["hyperparameters"].items() if k in cls._param_names()}
        model = cls(**params)
        model._validate_params()
        if doc.get("threshold") is None:
            raise ValueError("the model has no threshold")
        model.threshold_ = Threshold.from_dict(doc["threshold"])
        model.training_summary_ = doc.get("training") or {}
        model._restore(doc["state"], tensors)
        return model


def check_table(X) -> pl.DataFrame:
    if not isinstance(X, pl.DataFrame):
        raise SchemaError(f"expected a polars DataFrame of records (as read_flows returns), got {type(X).__name__}")
    return X


def embed_members(members: list["BaseDetector"]) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Documents and prefixed tensors of sub-models, for composite models' `_state`/`_tensors`."""
    docs, tensors = [], {}
    for k, member in enumerate(members):
        doc, weights = member.to_document()
        docs.append(doc)
        tensors.update({f"member{k}.{name}": t for name, t in weights.items()})
    return docs, tensors


def member_tensors(tensors: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    prefix = f"member{k}."
    return {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}
