"""Dense autoencoder over single records: 128-64-32-16-32-64-128.

Trained on benign records like the LSTM autoencoder (same features, denoising, threshold and
persistence, from `ReconstructionDetector`), but it sees one record at a time, so it is the
fast choice when records carry no useful order.
"""

from __future__ import annotations

import torch
from torch import nn

from deepids.models.reconstruction import ReconstructionDetector
from deepids.models.registry import register


class DenseAutoencoderNet(nn.Module):
    """(batch, 1, F) -> (batch, 1, F) through the hidden widths, ReLU between layers."""

    def __init__(self, n_features: int, hidden: tuple[int, ...] = (128, 64, 32, 16, 32, 64, 128)):
        super().__init__()
        layers, width = [], n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_features))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)        # Linear acts on the last axis: (B, 1, F) stays (B, 1, F)


@register
class DenseAutoencoder(ReconstructionDetector):
    """Unsupervised: mean absolute reconstruction error of each record."""

    model_name = "dense-ae"

    def __init__(self, hidden: tuple[int, ...] = (128, 64, 32, 16, 32, 64, 128), epochs: int = 20,
                 batch_size: int = 64, learning_rate: float = 3e-3, patience: int = 3,
                 validation_fraction: float = 0.2, threshold_method: str = "percentile",
                 threshold_percentile: float = 99.0, threshold_fpr: float = 0.01,
                 threshold_value: float | None = None, clip: float = 3.0, normalise_errors: bool = False,
                 noise: float = 0.5, seed: int = 0, device: str | None = None, verbose: bool = True):
        self.hidden = tuple(hidden)
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.threshold_method = threshold_method
        self.threshold_percentile = threshold_percentile
        self.threshold_fpr = threshold_fpr
        self.threshold_value = threshold_value
        self.clip = clip
        self.normalise_errors = normalise_errors
        self.noise = noise
        self.seed = seed
        self.device = device
        self.verbose = verbose
        # a record is its own window
        self.sequence_length, self.entity, self.score_mode = 1, None, "last"
        self.threshold_ = None
        self.training_summary_ = {}

    def _build_network(self, n_features: int) -> nn.Module:
        return DenseAutoencoderNet(n_features, self.hidden)
