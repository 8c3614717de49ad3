"""Supervised flow classifiers: they learn from labelled benign and attack records.

`BaseClassifier` is the contract every classifier keeps (torch or scikit-learn):
- `target="binary"` learns benign vs attack; `target="family"` learns benign and each attack
  family (see `deepids.features.families`), so one model both detects and names;
- `score_samples` is P(attack) = 1 - P(benign), `predict` is 1 for an attack at `threshold_`
  (0.5 unless chosen otherwise), `predict_proba` gives one column per `classes_`, and
  `predict_label` the most probable class name;
- class imbalance is handled by class weights: each class weighs n / (n_classes * n_class),
  so rare attack families count as much as benign traffic in the loss. By default
  (`class_weighting=None`) weights are used when naming families, where the rarest families
  would otherwise be ignored, and not for binary detection, where they cost accuracy
  (measured on the CICIDS2017 sample: 99.63-99.68 % without, 99.35-99.49 % with).

`DNNClassifier` and `CNNClassifier` write only their networks; `TorchClassifier` holds the
rest on the shared training loop.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import polars as pl
import torch
from torch import nn

from deepids.errors import ConfigError, SchemaError
from deepids.features.families import attack_families
from deepids.features.preprocess import feature_columns, fit_preprocessor
from deepids.io.schema import BENIGN, LABEL
from deepids.models.base import BaseDetector, FitOptions, Scores, check_table
from deepids.models.params import COMMON, TRAINING, Interval, Options, Widths
from deepids.models.registry import register
from deepids.models.training import fit_network, record_batches, resolve_device, seed_everything
from deepids.thresholds import Threshold, threshold_fixed

TARGETS = ("binary", "family")


def training_targets(X: pl.DataFrame, y, target: str) -> np.ndarray:
    """Class names per record from `y` or the table's label column; a clear error without labels."""
    if target not in TARGETS:
        raise ConfigError(f"target must be one of {TARGETS}, got {target!r}")
    if y is None:
        if LABEL not in X.columns:
            raise SchemaError("supervised models need labels: the data has no label column "
                              "(name it with --label-column, or train a detector such as lstm-ae)")
        y = X.get_column(LABEL).to_numpy()
    labels = np.asarray(y.to_numpy() if isinstance(y, pl.Series) else y, dtype=object)
    if target == "binary":
        return np.where(labels == BENIGN, BENIGN, "attack").astype(object)
    return attack_families(labels)


def class_weights(codes: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    return np.where(counts > 0, len(codes) / (n_classes * np.maximum(counts, 1)), 0.0)


class BaseClassifier(BaseDetector):
    """Supervised contract: classes_, predict_proba, predict_label; score = P(attack)."""

    classes_: list[str]

    def predict_proba(self, X: pl.DataFrame) -> np.ndarray:
        """(n, len(classes_)) class probabilities."""
        X = check_table(X)
        self._check_fitted()
        return self._predict_proba(X)

    @abstractmethod
    def _predict_proba(self, X: pl.DataFrame) -> np.ndarray:
        """The model's class probabilities for a checked table (the model is fitted)."""

    def _score_records(self, X: pl.DataFrame) -> Scores:
        proba = self._predict_proba(X)
        benign = self.classes_.index(BENIGN) if BENIGN in self.classes_ else None
        attack = 1.0 - proba[:, benign] if benign is not None else np.ones(len(proba))
        eps = 1e-7
        rows = np.arange(len(proba))
        return Scores(score=attack.astype(np.float32), loss=-np.log(np.clip(proba[rows, proba.argmax(axis=1)], eps, 1)),
                      predicted=np.asarray(self.classes_, dtype=object)[proba.argmax(axis=1)],
                      feature_names=list(getattr(self, "feature_names_", [])))

    def predict_label(self, X: pl.DataFrame) -> np.ndarray:
        proba = self.predict_proba(X)
        return np.asarray(self.classes_, dtype=object)[proba.argmax(axis=1)]

    def _uncalibrated_threshold(self) -> Threshold:
        threshold = threshold_fixed(0.5)
        threshold.note = "P(attack) > 0.5"
        return threshold


class TorchClassifier(BaseClassifier):
    """Everything but the network: features, class weights, the shared loop, persistence."""

    _parameter_constraints = {**COMMON, **TRAINING, "validation_fraction": [Interval(float, 0, 1, "left")],
                              "target": [Options(TARGETS)], "class_weighting": [bool, None],
                              "hidden": [Widths()], "dropout": [Interval(float, 0, 1, "left")]}
    _fitted_attribute = "network_"

    def __init__(self, target: str = "binary", epochs: int = 50, batch_size: int = 256,
                 learning_rate: float = 1e-3, patience: int = 5, validation_fraction: float = 0.1,
                 class_weighting: bool | None = None, seed: int = 0, device: str | None = None, verbose: bool = True):
        self.target = target
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.class_weighting = class_weighting
        self.seed = seed
        self.device = device
        self.verbose = verbose
        self.threshold_ = None
        self.training_summary_ = {}

    @abstractmethod
    def _build_network(self, n_features: int, n_classes: int) -> nn.Module:
        """The network: (batch, n_features) -> (batch, n_classes) logits."""

    def _fit(self, X: pl.DataFrame, y, options: FitOptions) -> None:
        names = training_targets(X, y, self.target)
        self.classes_ = sorted(set(names.tolist()), key=lambda c: (c != BENIGN, c))
        if len(self.classes_) < 2:
            raise SchemaError(f"need at least two classes to learn from, got only {self.classes_}")
        lookup = {c: i for i, c in enumerate(self.classes_)}
        codes = np.asarray([lookup[c] for c in names], dtype=np.int64)
        rng = np.random.default_rng(self.seed)
        is_val = rng.random(X.height) < self.validation_fraction
        self._use_preprocessor(fit_preprocessor(X.filter(pl.Series(~is_val)), feature_columns(X)))
        features = torch.from_numpy(self.preprocessor_.transform(X))
        target = torch.from_numpy(codes.astype(np.int64))
        weighting = self.target == "family" if self.class_weighting is None else self.class_weighting
        weights = class_weights(codes[~is_val], len(self.classes_)) if weighting else np.ones(len(self.classes_))
        weight_t = torch.tensor(weights, dtype=torch.float32)

        def loss_fn(network, batch):
            x, t = batch
            return nn.functional.cross_entropy(network(x), t, weight=weight_t.to(x.device))

        seed_everything(self.seed)
        self.network_ = self._build_network(len(self.feature_names_), len(self.classes_))
        config = self._training_config(options, fingerprint={"records": X.height, "classes": self.classes_})
        val = torch.from_numpy(is_val)
        history = fit_network(self.network_, loss_fn,
                              record_batches(features[~val], target[~val], self.batch_size, shuffle=True),
                              record_batches(features[val], target[val], 8192, shuffle=False) if is_val.any() else None,
                              config, n_train=int((~is_val).sum()), description=self.model_name)
        self.network_.to("cpu")
        self.training_summary_ = {
            "records": X.height, "classes": {c: int((names == c).sum()) for c in self.classes_},
            "class_weights": dict(zip(self.classes_, np.round(weights, 4).tolist())),
            "train_records": int((~is_val).sum()), "validation_records": int(is_val.sum()),
            "features": len(self.feature_names_), "history": history.to_dict(),
        }

    @torch.inference_mode()
    def _predict_proba(self, X: pl.DataFrame) -> np.ndarray:
        device = resolve_device(self.device)
        net = self.network_.to(device).eval()
        features = torch.from_numpy(self.preprocessor_.transform(X))
        out = [torch.softmax(net(features[i:i + 16384].to(device)), dim=1).cpu()
               for i in range(0, len(features), 16384)]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes_)), dtype=np.float32)

    def _state(self) -> dict:
        return {"classes": self.classes_, **self._feature_state()}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.network_.state_dict())

    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.classes_ = list(state["classes"])
        self._restore_features(state)
        self.network_ = self._load_network(lambda: self._build_network(len(self.feature_names_), len(self.classes_)),
                                           tensors)


class DNNNet(nn.Module):
    def __init__(self, n_features: int, n_classes: int, hidden: tuple[int, ...] = (256, 128, 64), dropout: float = 0.1):
        super().__init__()
        layers, width = [], n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class CNNNet(nn.Module):
    """1-D convolutions over the feature vector (features in canonical order), pooling as it goes."""

    def __init__(self, n_features: int, n_classes: int, channels: tuple[int, int, int] = (16, 32, 32)):
        super().__init__()
        c1, c2, c3 = channels
        self.conv = nn.Sequential(
            nn.Conv1d(1, c1, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(c1, c2, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(c2, c3, kernel_size=3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool1d(4),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c3 * 4, 64), nn.ReLU(), nn.Linear(64, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x.unsqueeze(1)))


@register
class DNNClassifier(TorchClassifier):
    """Feed-forward classifier: 512-256-128, ReLU, dropout 0.2, up to 100 epochs with patience 10.

    Measured on the CICIDS2017 sample's benchmark split (seeds 0-2): 99.77 / 99.72 / 99.63 %
    binary accuracy, against 99.59-99.68 % for 256-128-64 with dropout 0.1 and patience 5.
    """

    model_name = "dnn"

    def __init__(self, hidden: tuple[int, ...] = (512, 256, 128), dropout: float = 0.2, target: str = "binary",
                 epochs: int = 100, batch_size: int = 256, learning_rate: float = 1e-3, patience: int = 10,
                 validation_fraction: float = 0.1, class_weighting: bool | None = None, seed: int = 0,
                 device: str | None = None, verbose: bool = True):
        super().__init__(target=target, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                         patience=patience, validation_fraction=validation_fraction,
                         class_weighting=class_weighting, seed=seed, device=device, verbose=verbose)
        self.hidden = tuple(hidden)
        self.dropout = dropout

    def _build_network(self, n_features: int, n_classes: int) -> nn.Module:
        return DNNNet(n_features, n_classes, self.hidden, self.dropout)


@register
class CNNClassifier(TorchClassifier):
    """1-D convolutional classifier over the feature vector of each record."""

    model_name = "cnn"

    def _build_network(self, n_features: int, n_classes: int) -> nn.Module:
        return CNNNet(n_features, n_classes)
