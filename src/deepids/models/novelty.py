"""Novelty by distance: how far a record lies from the nearest of a set of reference records.

Used by the two-stage detector twice:
- distance to the nearest **benign** training record, in the fitted feature space, flags what
  looks like no normal traffic seen in training (the hybrid stage one);
- distance to the nearest **training attack** in the family classifier's embedding (its last
  hidden layer) says whether a flagged record resembles any attack family the classifier knows,
  a better novelty signal than the softmax confidence, which a network gives freely far from
  its training data.

The reference is a seeded sample of at most `max_reference` rows, and the threshold a quantile
of the distances of held-back rows (never the reference's own), so it is calibrated on records
the reference did not contain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

CHUNK = 2048


@dataclass
class NearestReference:
    reference: np.ndarray       # (m, d) float32
    threshold: float = float("inf")
    quantile: float = 0.99
    # the held-back rows' distances, kept after `fit` (not saved) so `recalibrate` can move the
    # threshold to another quantile without fitting again
    held_back_distances: np.ndarray | None = None

    @classmethod
    def fit(cls, reference: np.ndarray, held_back: np.ndarray, quantile: float, *, max_reference: int = 10_000,
            seed: int = 0) -> "NearestReference":
        reference = np.asarray(reference, dtype=np.float32)
        if len(reference) > max_reference:
            keep = np.sort(np.random.default_rng(seed).choice(len(reference), max_reference, replace=False))
            reference = reference[keep]
        model = cls(np.ascontiguousarray(reference), quantile=quantile)
        if len(held_back):
            model.held_back_distances = model.distances(held_back)
            model.threshold = float(np.quantile(model.held_back_distances, quantile))
        return model

    def recalibrate(self, quantile: float) -> None:
        """The threshold at another quantile of the held-back distances (only after `fit`)."""
        if self.held_back_distances is None:
            raise ValueError("recalibrate needs the held-back distances of fit (a loaded reference has none)")
        self.quantile = quantile
        self.threshold = float(np.quantile(self.held_back_distances, quantile))

    @torch.inference_mode()
    def distances(self, X: np.ndarray) -> np.ndarray:
        """Euclidean distance of each row of X to its nearest reference row."""
        X = np.asarray(X, dtype=np.float32)
        if not len(X) or not len(self.reference):
            return np.full(len(X), np.inf, dtype=np.float32)
        ref = torch.from_numpy(self.reference)
        out = np.empty(len(X), dtype=np.float32)
        for start in range(0, len(X), CHUNK):
            block = torch.from_numpy(np.ascontiguousarray(X[start:start + CHUNK]))
            out[start:start + CHUNK] = torch.cdist(block, ref).min(dim=1).values.numpy()
        return out

    def is_novel(self, X: np.ndarray) -> np.ndarray:
        return self.distances(X) > self.threshold

    def to_state(self) -> dict:
        return {"threshold": self.threshold, "quantile": self.quantile, "reference_rows": len(self.reference)}

    @classmethod
    def from_state(cls, state: dict, reference: torch.Tensor) -> "NearestReference":
        return cls(reference.numpy().astype(np.float32), float(state["threshold"]), float(state["quantile"]))


@torch.inference_mode()
def classifier_embedding(classifier, X: pl.DataFrame) -> np.ndarray:
    """A classifier's view of each record: its last hidden layer for the torch classifiers, its
    class probabilities for the others."""
    from deepids.models.supervised import CNNNet, DNNNet

    net = getattr(classifier, "network_", None)
    if isinstance(net, (DNNNet, CNNNet)):
        features = torch.from_numpy(classifier.preprocessor_.transform(X))
        net = net.to("cpu").eval()
        body = net.layers[:-1] if isinstance(net, DNNNet) else (lambda x: net.head[:-1](net.conv(x.unsqueeze(1))))
        return torch.cat([body(features[i:i + 16384]) for i in range(0, len(features), 16384)]).numpy() \
            if len(features) else np.zeros((0, 1), dtype=np.float32)
    return np.asarray(classifier.predict_proba(X), dtype=np.float32)
