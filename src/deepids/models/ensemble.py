"""An ensemble of LSTM autoencoders: members differ in seed, and optionally in window length
and feature subset.

All members share one benign validation split (`split_seed`): they train on the same benign
records and stop early on the same held-out ones, and those held-out records — which no
member trained on — set each member's normalisation and the threshold on the aggregate. A member's score is
normalised as `(score - median) / (p90 - median)` of its calibration scores, so members with
different error scales weigh alike; then the normalised scores are aggregated (mean, median
or max).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from deepids.errors import ConfigError
from deepids.features.preprocess import feature_columns
from deepids.io.schema import LABEL, METADATA_COLUMNS
from deepids.models.base import BaseDetector, Scores, benign_training_rows, check_table, embed_members, member_tensors
from deepids.models.lstm_ae import LSTMAutoencoder

AGGREGATES = ("mean", "median", "max")


class LSTMAutoencoderEnsemble(BaseDetector):
    model_name = "lstm-ae-ensemble"

    def __init__(self, n_members: int = 5, aggregate: str = "mean", sequence_length: int = 10,
                 sequence_lengths: list[int] | None = None, feature_fraction: float = 1.0,
                 validation_fraction: float = 0.2, epochs: int = 20, batch_size: int = 64,
                 learning_rate: float = 3e-3, patience: int = 3, entity: str | None = "src_ip",
                 objective: str | None = None, threshold_method: str = "percentile", threshold_percentile: float = 99.0,
                 threshold_fpr: float = 0.01, threshold_value: float | None = None, seed: int = 0,
                 device: str | None = None, verbose: bool = True):
        self.n_members = n_members
        self.aggregate = aggregate
        self.sequence_length = sequence_length
        self.sequence_lengths = sequence_lengths
        self.feature_fraction = feature_fraction
        self.validation_fraction = validation_fraction
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.entity = entity
        self.objective = objective
        self.threshold_method = threshold_method
        self.threshold_percentile = threshold_percentile
        self.threshold_fpr = threshold_fpr
        self.threshold_value = threshold_value
        self.seed = seed
        self.device = device
        self.verbose = verbose
        self.threshold_ = None
        self.training_summary_ = {}

    def _validate(self) -> None:
        if self.n_members < 1:
            raise ConfigError(f"n_members must be at least 1, got {self.n_members}")
        if self.aggregate not in AGGREGATES:
            raise ConfigError(f"aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")
        if not 0 < self.feature_fraction <= 1:
            raise ConfigError(f"feature_fraction must be in (0, 1], got {self.feature_fraction}")
        if self.sequence_lengths is not None and len(self.sequence_lengths) != self.n_members:
            raise ConfigError("sequence_lengths needs one window length per member")

    def fit(self, X: pl.DataFrame, y=None) -> "LSTMAutoencoderEnsemble":
        X = check_table(X)
        self._validate()
        table, benign, n_attacks = benign_training_rows(X, y, minimum=10)
        rng = np.random.default_rng(self.seed)
        features = feature_columns(X)
        keep_always = [c for c in table.columns if c in METADATA_COLUMNS or c == LABEL]
        self.members_, self.member_columns_ = [], []
        for k in range(self.n_members):
            cols = features
            if self.feature_fraction < 1:
                n = max(1, int(round(self.feature_fraction * len(features))))
                cols = sorted(rng.choice(features, n, replace=False).tolist(), key=features.index)
            T = self.sequence_lengths[k] if self.sequence_lengths else self.sequence_length
            member = LSTMAutoencoder(
                sequence_length=T, epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
                patience=self.patience, validation_fraction=self.validation_fraction, entity=self.entity,
                objective=self.objective, seed=self.seed + k, split_seed=self.seed, device=self.device, verbose=self.verbose)
            member.fit(table.select(keep_always + cols))
            self.members_.append(member)
            self.member_columns_.append(cols)
        is_cal = self.members_[0].validation_mask(table.height)     # the split every member held back
        cal_member_scores = self._member_scores(table.filter(pl.Series(is_cal)))
        self.centre_ = np.median(cal_member_scores, axis=1)
        spread = np.percentile(cal_member_scores, 90, axis=1) - self.centre_
        self.scale_ = np.where(spread > 1e-12, spread, 1.0)
        cal_scores = self._aggregate(cal_member_scores)
        self.set_threshold(self.threshold_method, benign_scores=cal_scores, percentile=self.threshold_percentile,
                           fpr=self.threshold_fpr, value=self.threshold_value)
        self.training_summary_ = {
            "records": X.height, "benign_records": table.height, "attack_records_left_out": n_attacks,
            "calibration_records": int(is_cal.sum()), "members": [
                {"seed": m.seed, "sequence_length": m.sequence_length, "features": len(c),
                 "best_val_loss": m.training_summary_["history"]["best_val_loss"]}
                for m, c in zip(self.members_, self.member_columns_)],
        }
        return self

    # ---------------------------------------------------------------- scoring
    def _member_scores(self, X: pl.DataFrame, histories=None) -> np.ndarray:
        rows = []
        for k, member in enumerate(self.members_):
            rows.append(member.score_chunk(X, histories[k]).score if histories is not None
                        else member.score_records(X).score)
        return np.vstack(rows).astype(np.float64)

    def _aggregate(self, member_scores: np.ndarray) -> np.ndarray:
        z = (member_scores - self.centre_[:, None]) / self.scale_[:, None]
        return {"mean": np.mean, "median": np.median, "max": np.max}[self.aggregate](z, axis=0)

    def score_records(self, X: pl.DataFrame) -> Scores:
        X = check_table(X)
        if not hasattr(self, "members_"):
            raise ConfigError("the model is not fitted yet")
        return Scores(score=self._aggregate(self._member_scores(X)).astype(np.float32))

    def score_chunk(self, X: pl.DataFrame, history=None) -> Scores:
        return Scores(score=self._aggregate(self._member_scores(X, history)).astype(np.float32))

    def new_history(self):
        return [m.new_history() for m in self.members_]

    # ------------------------------------------------------------ persistence
    def _state(self) -> dict:
        docs, _ = embed_members(self.members_)
        return {"members": docs, "member_columns": self.member_columns_, "centre": self.centre_.tolist(),
                "scale": self.scale_.tolist()}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return embed_members(self.members_)[1]

    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        from deepids.models import model_from_document

        self.members_ = [model_from_document(doc, member_tensors(tensors, k), f"ensemble member {k}")
                         for k, doc in enumerate(state["members"])]
        self.member_columns_ = [list(c) for c in state["member_columns"]]
        self.centre_ = np.asarray(state["centre"], dtype=np.float64)
        self.scale_ = np.asarray(state["scale"], dtype=np.float64)
