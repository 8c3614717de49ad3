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
from deepids.models.base import BaseDetector, FitOptions, Scores, benign_training_rows, embed_members, member_tensors
from deepids.models.lstm_ae import LSTMAutoencoder
from deepids.models.params import (COMMON, MAX_SEQUENCE, THRESHOLD, TRAINING, Interval, Options, Widths)
from deepids.models.reconstruction import OBJECTIVES
from deepids.models.registry import model_from_document, register

AGGREGATES = ("mean", "median", "max")
MAX_MEMBERS = 1000


@register
class LSTMAutoencoderEnsemble(BaseDetector):
    model_name = "lstm-ae-ensemble"
    _parameter_constraints = {
        **COMMON, **TRAINING, **THRESHOLD, "n_members": [Interval(int, 1, MAX_MEMBERS)],
        "aggregate": [Options(AGGREGATES)], "sequence_length": [Interval(int, 1, MAX_SEQUENCE)],
        "sequence_lengths": [Widths(1, MAX_SEQUENCE, MAX_MEMBERS, "window lengths"), None],
        "feature_fraction": [Interval(float, 0, 1, "right")], "entity": [str, None],
        "objective": [Options(OBJECTIVES), None],
    }
    _fitted_attribute = "members_"

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

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.sequence_lengths is not None and len(self.sequence_lengths) != self.n_members:
            raise ConfigError("sequence_lengths needs one window length per member")
        for k in range(self.n_members):
            self._member(k)._validate_params()

    def _member(self, k: int) -> LSTMAutoencoder:
        T = self.sequence_lengths[k] if self.sequence_lengths else self.sequence_length
        return LSTMAutoencoder(
            sequence_length=T, epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
            patience=self.patience, validation_fraction=self.validation_fraction, entity=self.entity,
            objective=self.objective, seed=self.seed + k, split_seed=self.seed, device=self.device, verbose=self.verbose)

    def _fit(self, X: pl.DataFrame, y, options: FitOptions) -> np.ndarray:
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
            member = self._member(k)
            member.fit(table.select(keep_always + cols), **options.sub(f"member{k}").as_kwargs())
            self.members_.append(member)
            self.member_columns_.append(cols)
        is_cal = self.members_[0].validation_mask(table.height)     # the split every member held back
        cal_member_scores = self._member_scores(table.filter(pl.Series(is_cal)))
        self.centre_ = np.median(cal_member_scores, axis=1)
        spread = np.percentile(cal_member_scores, 90, axis=1) - self.centre_
        self.scale_ = np.where(spread > 1e-12, spread, 1.0)
        self.training_summary_ = {
            "records": X.height, "benign_records": table.height, "attack_records_left_out": n_attacks,
            "calibration_records": int(is_cal.sum()), "members": [
                {"seed": m.seed, "sequence_length": m.sequence_length, "features": len(c),
                 "best_val_loss": m.training_summary_["history"]["best_val_loss"]}
                for m, c in zip(self.members_, self.member_columns_)],
        }
        return self._aggregate(cal_member_scores)

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

    def _score_records(self, X: pl.DataFrame) -> Scores:
        return Scores(score=self._aggregate(self._member_scores(X)).astype(np.float32))

    def _score_chunk(self, X: pl.DataFrame, history=None) -> Scores:
        return Scores(score=self._aggregate(self._member_scores(X, history)).astype(np.float32))

    def new_history(self):
        self._check_fitted()
        return [m.new_history() for m in self.members_]

    # ------------------------------------------------------------ persistence
    def _state(self) -> dict:
        docs, _ = embed_members(self.members_)
        return {"members": docs, "member_columns": self.member_columns_, "centre": self.centre_.tolist(),
                "scale": self.scale_.tolist()}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return embed_members(self.members_)[1]

    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.members_ = [model_from_document(doc, member_tensors(tensors, k), f"ensemble member {k}")
                         for k, doc in enumerate(state["members"])]
        self.member_columns_ = [list(c) for c in state["member_columns"]]
        self.centre_ = np.asarray(state["centre"], dtype=np.float64)
        self.scale_ = np.asarray(state["scale"], dtype=np.float64)
        n = len(self.members_)
        if len(self.member_columns_) != n or self.centre_.shape != (n,) or self.scale_.shape != (n,):
            raise ValueError(f"the ensemble describes {n} members but its columns or scales do not match")
