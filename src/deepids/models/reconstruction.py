"""Reconstruction detectors: autoencoders trained on benign records, scored by reconstruction error.

`ReconstructionDetector` holds everything but the network: features fitted on benign
training rows, windows per entity, denoising training on the shared loop, the benign
validation split, scoring (with per-feature errors for explanations), the threshold and
persistence. `LSTMAutoencoder` and `DenseAutoencoder` supply only their networks.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import polars as pl
import torch
from torch import nn

from deepids.errors import ConfigError
from deepids.features.preprocess import feature_columns, fit_preprocessor
from deepids.features.windows import EntityHistory, window_order, windows_by_entity
from deepids.io.schema import LABEL
from deepids.models.base import (BaseDetector, FitOptions, Scores, benign_training_rows, benign_validation_mask,
                                 check_table)
from deepids.models.params import (COMMON, MAX_SEQUENCE, MAX_WIDTH, SEED, THRESHOLD, TRAINING, Interval, Options,
                                   Widths)
from deepids.models.training import (fit_network, resolve_device, run_batches, seed_everything,
                                     window_batches)

SCORE_MODES = ("last", "window")
SAMPLE_KEY = "__deepids_sample_key"


OBJECTIVES = ("window", "last")


def reconstruction_loss(noise: float = 0.0, objective: str = "window"):
    """MSE between the clean window and the network's reconstruction of it.

    With `noise` > 0 the network sees the window with Gaussian noise added while training
    (a denoising autoencoder), so it learns the shape of normal traffic rather than a copy.
    `objective="last"` counts only the window's newest step: the network learns to rebuild a
    record from its own (noisy) values and the entity's earlier records, instead of squeezing
    the whole window through the code.
    """

    def loss(network: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        (x,) = batch
        noisy = x + noise * torch.randn_like(x) if (noise > 0 and network.training) else x
        if objective == "last":
            return torch.mean((network(noisy)[:, -1] - x[:, -1]) ** 2)
        return torch.mean((network(noisy) - x) ** 2)

    return loss


class ReconstructionDetector(BaseDetector):
    """Shared estimator logic of the autoencoders; subclasses set hyperparameters and the network.

    Subclasses' `__init__` must set: sequence_length, epochs, batch_size, learning_rate, patience,
    validation_fraction, entity, score_mode, threshold_method, threshold_percentile,
    threshold_fpr, threshold_value, clip, normalise_errors, noise, seed, device, verbose.
    """

    _parameter_constraints = {
        **COMMON, **TRAINING, **THRESHOLD,
        "sequence_length": [Interval(int, 1, MAX_SEQUENCE)], "entity": [str, None],
        "score_mode": [Options(SCORE_MODES)], "objective": [Options(OBJECTIVES), None],
        "clip": [Interval(float, 0, None, "neither")], "normalise_errors": [bool],
        "noise": [Interval(float, 0, 100)], "split_seed": [*SEED, None],
        "encoder_units": [Interval(int, 1, MAX_WIDTH)], "decoder_units": [Interval(int, 1, MAX_WIDTH)],
        "hidden": [Widths()],
    }
    _fitted_attribute = "network_"

    @abstractmethod
    def _build_network(self, n_features: int) -> nn.Module:
        """(batch, sequence_length, n_features) -> reconstruction of the same shape."""

    # ------------------------------------------------------------------ fitting
    def _validate_params(self) -> None:
        super()._validate_params()
        objective = getattr(self, "objective", None)
        if objective == "last" and self.score_mode != "last":
            raise ConfigError("objective 'last' trains only each window's newest step; score it with score_mode 'last'")

    def _fit(self, X: pl.DataFrame, y, options: FitOptions) -> np.ndarray:
        """Train on the benign records of X (attack rows, when labelled, are left out and counted)."""
        train_table, benign, n_attacks = benign_training_rows(X, y, minimum=2)
        is_val = self.validation_mask(train_table.height)
        fit_rows = train_table.filter(pl.Series(~is_val))
        self._use_preprocessor(fit_preprocessor(fit_rows, feature_columns(X), clip=self.clip))

        features = torch.from_numpy(self.preprocessor_.transform(train_table))
        idx = self._window_index(train_table)
        seed_everything(self.seed)            # the initial weights too: same seed, same model
        self.network_ = self._build_network(len(self.feature_names_))
        config = self._training_config(options, fingerprint={"records": X.height, "windows": len(idx)})
        history = fit_network(
            self.network_, reconstruction_loss(self.noise, self.training_objective()),
            window_batches(features, idx[~is_val], self.batch_size, shuffle=True),
            window_batches(features, idx[is_val], 4096, shuffle=False),
            config, n_train=int((~is_val).sum()), description=self.model_name,
        )
        self.network_.to("cpu")
        val_scores = self._validation_scores(features.numpy(), idx[is_val])
        self.training_summary_ = {
            "records": X.height, "benign_records": train_table.height, "attack_records_left_out": n_attacks,
            "train_windows": int((~is_val).sum()), "validation_windows": int(is_val.sum()),
            "labelled": benign is not None, "features": len(self.feature_names_),
            "dropped_constant": self.preprocessor_.dropped_constant_, "entity": self._entity_column(X),
            "history": history.to_dict(), "validation_score_quantiles": _quantiles(val_scores),
        }
        return val_scores

    def training_objective(self) -> str:
        """What training minimises: the `objective` set, else the steps the score reads (`score_mode`)."""
        return getattr(self, "objective", None) or self.score_mode

    def validation_mask(self, n_benign: int) -> np.ndarray:
        """Which benign training records are held back for early stopping and the threshold.

        Drawn from `split_seed` (the model's seed unless set), so ensemble members can share it.
        """
        split_seed = getattr(self, "split_seed", None)
        return benign_validation_mask(n_benign, self.validation_fraction, self.seed if split_seed is None else split_seed)

    # ------------------------------------------------------- training from files, streamed
    def fit_files(self, paths, *, layout: str | None = None, label_column: str | None = None,
                  chunk_rows: int = 100_000, sample_rows: int = 200_000, max_validation: int = 20_000,
                  progress=None, checkpoint_dir=None, resume: bool = False,
                  columns: list[str] | None = None) -> "ReconstructionDetector":
        """Train on flow files too large to hold at once, reading them in chunks every epoch.

        Memory is bounded by the chunk, the feature sample and the validation set, not by the
        files. The differences from `fit`, which holds the whole table:
        - the features are fitted on a uniform sample of `sample_rows` benign records, drawn in
          a first pass over the files, not on every training record;
        - windows are shuffled within each chunk of `chunk_rows` records, not across the file;
        - each benign record is held back for validation with probability
          `validation_fraction`, drawn per chunk from the seed (the same records every epoch);
          the first `max_validation` of those windows are kept for early stopping and the
          threshold, and the rest are left out of training too (counted in the summary).
        Attack records, when labelled, are left out and counted, as in `fit`. `progress`,
        `checkpoint_dir` and `resume` are `fit`'s. `columns`: the feature columns (default: those
        whose role is feature in the first chunk, see `deepids.io.roles`).
        """
        from deepids.io.flows import iter_flow_batches

        self._validate_params()
        if self.threshold_method == "best-f1":
            raise ConfigError("best-f1 is not available when training from files; use percentile, fpr or fixed")
        chunks = lambda: iter_flow_batches(paths, layout=layout, label_column=label_column,  # noqa: E731
                                           batch_size=chunk_rows)
        survey = _survey_files(chunks(), sample_rows, np.random.default_rng(self.seed), columns)
        self._use_preprocessor(fit_preprocessor(survey.pop("sample"), survey.pop("columns"), clip=self.clip))
        val_scores, counts, history = self._train_streamed(
            chunks, max_validation, FitOptions(progress, checkpoint_dir, resume), survey["records"])
        self._calibrate(val_scores, None)
        read = survey.pop("read")
        self.training_summary_ = {
            "records": survey["records"], "benign_records": survey["benign"], "attack_records_left_out": survey["attacks"],
            **counts, "streamed": {"chunk_rows": chunk_rows, "feature_sample_rows": min(survey["benign"], sample_rows),
                                   "max_validation": max_validation},
            "labelled": survey["labelled"],
            "features": len(self.feature_names_), "dropped_constant": self.preprocessor_.dropped_constant_,
            "entity": self.entity, "history": history.to_dict(), "validation_score_quantiles": _quantiles(val_scores),
            "read": read.to_dict() if read is not None else None,
        }
        return self

    def _streamed_sources(self, chunks, max_validation: int):
        """Batch sources over windows read chunk by chunk, for the training loop (single process or a Ray worker).

        Returns ``(stream, validation, counts, val_windows, first_epoch)``: ``stream(epoch_rng)`` yields
        training batches and, in the first epoch, holds back up to ``max_validation`` benign windows
        (``val_windows``, served by ``validation``); ``first_epoch[0]`` turns False once an epoch ended.
        """
        val_windows: list[np.ndarray] = []
        counts = {"train_windows": 0, "validation_windows": 0, "held_back_unused": 0}
        first_epoch = [True]

        def stream(epoch_rng: np.random.Generator | None):
            history = self.new_history()
            for i, (chunk, _) in enumerate(chunks()):
                benign = benign_training_rows(check_table(chunk), minimum=0)[0] if chunk.height else chunk
                if not benign.height:
                    continue
                matrix, idx = self._chunk_windows(benign, history)
                held = np.random.default_rng([self.seed, i]).random(len(idx)) < self.validation_fraction
                if first_epoch[0]:
                    room = max(max_validation - counts["validation_windows"], 0)
                    keep = np.flatnonzero(held)[:room]
                    if len(keep):
                        val_windows.append(matrix[idx[keep]].reshape(-1, matrix.shape[1]))
                    counts["validation_windows"] += len(keep)
                    counts["held_back_unused"] += int(held.sum()) - len(keep)
                    counts["train_windows"] += int((~held).sum())
                yield from window_batches(torch.from_numpy(matrix), idx[~held], self.batch_size,
                                          shuffle=True)(epoch_rng)
            first_epoch[0] = False

        T = self.sequence_length

        def validation(_rng):
            if val_windows:
                yield from window_batches(torch.from_numpy(np.concatenate(val_windows)), self._stored_index(
                    sum(len(v) for v in val_windows) // T), 4096, shuffle=False)(None)

        return stream, validation, counts, val_windows, first_epoch

    def _train_streamed(self, chunks, max_validation: int, options: FitOptions, records: int):
        """The shared loop over windows read chunk by chunk: (validation scores, window counts, history)."""
        stream, validation, counts, val_windows, first_epoch = self._streamed_sources(chunks, max_validation)
        T = self.sequence_length
        seed_everything(self.seed)
        self.network_ = self._build_network(len(self.feature_names_))
        config = self._training_config(options, fingerprint={"records": records, "streamed": True})
        history = fit_network(self.network_, reconstruction_loss(self.noise, self.training_objective()),
                              stream, validation, config, n_train=0, description=f"{self.model_name} (streamed)")
        if first_epoch[0]:                     # resumed from a finished run: no epoch read the files here
            for _ in stream(None):
                pass
        history.samples_per_second = counts["train_windows"] * len(history.train_loss) / max(history.seconds, 1e-9)
        self.network_.to("cpu")
        if not counts["validation_windows"]:
            raise ConfigError("no benign record was held back for validation; raise validation_fraction")
        stored = np.concatenate(val_windows)
        return self._validation_scores(stored, self._stored_index(len(stored) // T)), counts, history

    def _validation_scores(self, features: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Scores of the held-back benign windows; sets `error_scale_` (with `normalise_errors`)."""
        self.error_scale_ = np.ones(len(self.feature_names_), dtype=np.float32)
        validation = self._score_windows(features, idx)
        if not self.normalise_errors:
            return validation.score
        # each feature's error in units of its typical benign error, so that features the
        # network reconstructs loosely even on normal traffic do not drown the rest
        self.error_scale_ = np.maximum(validation.feature_error.mean(axis=0), 1e-3).astype(np.float32)
        return (validation.feature_error / self.error_scale_).mean(axis=1)

    def _stored_index(self, n_windows: int) -> np.ndarray:
        """Index of windows stored whole, one after another: window w is rows w*T .. w*T+T-1."""
        T = self.sequence_length
        return np.arange(n_windows * T, dtype=np.int64).reshape(n_windows, T)

    # ---------------------------------------------------------------- scoring
    def _entity_column(self, X: pl.DataFrame) -> str | None:
        return self.entity if self.entity and self.entity in X.columns else None

    def _window_index(self, X: pl.DataFrame) -> np.ndarray:
        codes, order = window_order(X, self._entity_column(X))
        return windows_by_entity(codes, order, self.sequence_length)

    def _score_records(self, X: pl.DataFrame) -> Scores:
        features = self.preprocessor_.transform(X)
        return self._score_windows(features, self._window_index(X))

    def _score_chunk(self, X: pl.DataFrame, history: EntityHistory) -> Scores:
        """Score one chunk of a larger input, carrying each entity's recent records in `history`."""
        return self._score_windows(*self._chunk_windows(X, history))

    def _chunk_windows(self, X: pl.DataFrame, history: EntityHistory) -> tuple[np.ndarray, np.ndarray]:
        """(feature matrix, window index) of one chunk, each entity's earlier records from `history`."""
        features = self.preprocessor_.transform(X)
        entity = self._entity_column(X)
        keys = (X.get_column(entity).cast(pl.Utf8).fill_null("").to_numpy() if entity
                else np.zeros(X.height, dtype=object).astype(str))
        _, order = window_order(X, entity)
        return history.windows(features, keys, order)

    def new_history(self) -> EntityHistory:
        return EntityHistory(self.sequence_length)

    @torch.inference_mode()
    def _score_windows(self, features: np.ndarray, idx: np.ndarray, batch_size: int | None = None) -> Scores:
        device = resolve_device(self.device)
        net = self.network_.to(device).eval()
        X = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(device)
        reconstruct, default_batch = _reconstructor(net, X)
        batch_size = batch_size or default_batch
        last = self.score_mode == "last"
        n = len(idx)
        score = np.empty(n, dtype=np.float32)
        loss = np.empty(n, dtype=np.float32)
        ferr = np.empty((n, X.shape[1]), dtype=np.float32)
        idx_t = torch.from_numpy(np.ascontiguousarray(idx)).to(device)
        scale = torch.from_numpy(getattr(self, "error_scale_", np.ones(X.shape[1], dtype=np.float32))).to(device)

        @torch.inference_mode()
        def score_batch(start: int, stop: int) -> None:
            recon, target = reconstruct(idx_t[start:stop], last)
            diff = recon.sub_(target)
            if last:                                   # (B, F): the window's last step only
                sq = diff.square().mean(dim=1)
                per_feature = diff.abs_()
            else:                                      # (B, T, F)
                sq = diff.square().mean(dim=(1, 2))
                per_feature = diff.abs_().mean(dim=1)
            per_feature = per_feature.div_(scale)
            ferr[start:stop] = per_feature.cpu().numpy()
            score[start:stop] = per_feature.mean(dim=1).cpu().numpy()
            loss[start:stop] = sq.cpu().numpy()

        run_batches(score_batch, n, batch_size, device)
        return Scores(score=score, feature_error=ferr, loss=loss, feature_names=self.feature_names_)

    # ------------------------------------------------------------ persistence
    def _state(self) -> dict:
        return {**self._feature_state(), "error_scale": self.error_scale_.tolist()}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.network_.state_dict())

    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self._restore_features(state)
        self.error_scale_ = np.asarray(state["error_scale"], dtype=np.float32)
        if self.error_scale_.shape != (len(self.feature_names_),) or not np.isfinite(self.error_scale_).all():
            raise ValueError("error_scale does not match the features or is not finite")
        self.network_ = self._load_network(lambda: self._build_network(len(self.feature_names_)), tensors)


def _survey_files(chunks, sample_rows: int, rng: np.random.Generator, columns: list[str] | None = None) -> dict:
    """Pass 1 of streamed training: counts, the feature columns (`columns`, or the roles of the
    first chunk) and a uniform sample of benign records."""
    sample: pl.DataFrame | None = None
    out = {"records": 0, "attacks": 0, "benign": 0, "labelled": False, "read": None,
           "columns": list(columns) if columns else None}
    for chunk, report in chunks:
        out["read"] = report if out["read"] is None else out["read"].merge(report)
        if not chunk.height:
            continue
        chunk = check_table(chunk)
        out["columns"] = out["columns"] or feature_columns(chunk)
        out["labelled"] = out["labelled"] or LABEL in chunk.columns
        benign, _, n_attacks = benign_training_rows(chunk, minimum=0)
        out["records"] += chunk.height
        out["attacks"] += n_attacks
        out["benign"] += benign.height
        # a uniform sample without replacement: every benign record draws a random key, and
        # the sample_rows smallest keys of the stream are kept (bottom-k sampling)
        keyed = benign.with_columns(pl.Series(SAMPLE_KEY, rng.random(benign.height)))
        if sample is not None and sample.height >= sample_rows:
            keyed = keyed.filter(pl.col(SAMPLE_KEY) < sample[SAMPLE_KEY].max())
        pool = keyed if sample is None else pl.concat([sample, keyed], how="vertical_relaxed")
        sample = pool.sort(SAMPLE_KEY).head(sample_rows)
    if out["benign"] < 2 or sample is None:
        raise ConfigError(f"need at least 2 benign records to train, got {out['benign']}")
    out["sample"] = sample.drop(SAMPLE_KEY)
    return out


def _reconstructor(net: nn.Module, X: torch.Tensor):
    """(reconstruct(idx, last_only) -> (reconstruction, target), batch size) for scoring windows of X.

    Networks that offer `windowed_inference` (the LSTM autoencoder) share work between
    overlapping windows; others see the gathered windows. Batch sizes were measured on a
    2-core CPU (bench/): the recurrent path is fastest with batches that stay in cache.
    """
    if getattr(net, "supports_windowed_inference", lambda: False)():
        fast = net.windowed_inference(X)

        def reconstruct(idx: torch.Tensor, last_only: bool):
            return fast(idx, last_only), (X[idx[:, -1]] if last_only else X[idx])

        return reconstruct, 1024

    def reconstruct(idx: torch.Tensor, last_only: bool):
        windows = X[idx]
        recon = net(windows)
        return (recon[:, -1], windows[:, -1]) if last_only else (recon, windows)

    return reconstruct, 8192


def _quantiles(s: np.ndarray) -> dict:
    if len(s) == 0:
        return {}
    q = np.percentile(s, [50, 90, 99, 100])
    return {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "max": float(q[3])}
