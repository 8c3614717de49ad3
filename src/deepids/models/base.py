"""The estimator contract and the saved-model format shared by every deepids model.

Estimators follow scikit-learn / PyOD: hyperparameters are plain `__init__` keywords stored
unchanged, fitted state ends in `_`, `fit(X, y=None)`, `score_samples(X)` (higher = more
anomalous), `predict(X)` (1 = anomaly).

A saved model is a directory: `model.json` (format version, class, hyperparameters, feature
schema, preprocessing state, threshold and its provenance, training summary) and
`weights.safetensors`. Loading never unpickles anything.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
import json
import os
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file

from deepids.errors import ConfigError, ModelFormatError, SchemaError
from deepids.io.schema import BENIGN, LABEL
from deepids.thresholds import Threshold, calibrate_threshold

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"


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


class BaseDetector(ABC):
    """Shared plumbing: parameters, thresholds, predict, save and load."""

    model_name: ClassVar[str] = ""
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

    # --------------------------------------------------------------- predicting
    def score_samples(self, X: pl.DataFrame) -> np.ndarray:
        return self.score_records(X).score

    @abstractmethod
    def score_records(self, X: pl.DataFrame) -> Scores:
        """Scores (and per-feature contributions) for every record of X, in input order."""

    def score_chunk(self, X: pl.DataFrame, history=None) -> Scores:
        """Score one chunk of a larger input; sequence models carry per-entity state in `history`."""
        return self.score_records(X)

    def new_history(self):
        """Per-entity state for `score_chunk` (None for models that score records alone)."""
        return None

    def predict(self, X: pl.DataFrame) -> np.ndarray:
        return (self.score_samples(X) > self._threshold_value()).astype(np.int64)

    def _threshold_value(self) -> float:
        if getattr(self, "threshold_", None) is None:
            raise ConfigError("the model has no threshold yet; fit it or call set_threshold")
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

        doc = {
            "format_version": FORMAT_VERSION,
            "deepids_version": __version__,
            "class": type(self).__name__,
            "model": self.model_name,
            "hyperparameters": _jsonable(self.get_params()),
            "threshold": self.threshold_.to_dict() if self.threshold_ else None,
            "training": _jsonable(self.training_summary_),
            "state": _jsonable(self._state()),
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
        model.threshold_ = Threshold.from_dict(doc["threshold"]) if doc.get("threshold") else None
        model.training_summary_ = doc.get("training") or {}
        model._restore(doc["state"], tensors)
        return model


def read_model_document(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read and validate a saved model directory; never unpickles."""
    path = Path(path)
    if not path.exists():
        raise ModelFormatError(f"no model at {path}")
    if not path.is_dir():
        raise ModelFormatError(f"{path} is not a model directory (expected {MODEL_JSON} and {WEIGHTS} inside)")
    meta, weights = path / MODEL_JSON, path / WEIGHTS
    if not meta.exists():
        raise ModelFormatError(f"{path} is not a deepids model: {MODEL_JSON} is missing")
    try:
        doc = json.loads(meta.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{meta} is damaged: {exc}") from None
    if not isinstance(doc, dict) or "format_version" not in doc or "class" not in doc:
        raise ModelFormatError(f"{meta} is damaged: format_version or class missing")
    version = doc["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFormatError(f"{path} was saved in model format {version}; this deepids reads format "
                               f"{FORMAT_VERSION} and older: upgrade deepids")
    for key in ("hyperparameters", "state"):
        if not isinstance(doc.get(key), dict):
            raise ModelFormatError(f"{meta} is damaged: '{key}' missing")
    if not weights.exists():
        raise ModelFormatError(f"{path} is damaged: {WEIGHTS} is missing")
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for a corrupt header
        raise ModelFormatError(f"{weights} is damaged: {exc}") from None
    return doc, tensors


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return None if not math.isfinite(f) else f
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


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
