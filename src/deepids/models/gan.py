"""A GAN anomaly detector for event records (threat hunting / UEBA on Windows logs).

Shape (the published defaults): a Dense generator with six hidden layers plus its output layer,
and a Dense discriminator with five layers (four hidden plus the output logit), LeakyReLU between
layers. An encoder (three layers) maps records to the latent space so records can be rebuilt as
`G(E(x))`.

Training alternates on the shared loop (`models/training.py`, through a custom `step_fn`); for
each mini-batch of benign records:
1. the discriminator learns on real records (one-sided label smoothing: target 0.9) and on
   generated ones (target 0), generator frozen;
2. the generator learns through the frozen discriminator (non-saturating loss, a fresh batch of
   latent codes);
3. the encoder learns to invert the frozen generator: `|x - G(E(x))|^2` plus the distance between
   the discriminator's penultimate features of `x` and `G(E(x))` (f-AnoGAN's izi_f, trained along
   with the GAN rather than afterwards). The validation loss the loop early-stops on is this
   encoder loss, so the restored epoch is the one whose generator and encoder rebuild held-out
   benign records best.

Anomaly scores (`score_method`), all higher = more anomalous:
- `reconstruction`: the izi_f loss of a record through `G(E(x))` (BiGAN/ALAD-style encoder
  reconstruction); per-feature errors explain it;
- `discriminator`: minus the discriminator's logit (how fake the record looks);
- `latent-search`: AnoGAN: starting from `E(x)`, `latent_steps` Adam steps on the latent code to
  minimise the residual plus 0.1 x the discriminator feature loss; the score is the final loss.
Training reads at most `max_records` benign records (30,000 by default, a uniform sample of
larger inputs): the one-hot event features are wide, so each step costs the same whatever the
data, and the sample keeps the default training short. `reconstruction` is the default: on the leave-recordings-out runs over the shared Empire recordings
(`bench/hunt_loro.py`, README "Threat hunting") it scores about 20x faster than `latent-search`
(see `bench/hunt_speed.py`) and ranked events as well; `discriminator` ranked attack events *below*
normal ones in earlier runs (ROC-AUC 0.07-0.33). Default training is short (8 epochs of batches of
256 at learning rate 1e-3, patience 3) so a model trains on the 175k shared events within about a
minute on 2 cores; the layer shapes are the published ones.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch
from torch import nn
from torch.nn import functional as F

from deepids.errors import ConfigError
from deepids.features.preprocess import feature_columns, fit_preprocessor
from deepids.models.base import (BaseDetector, FitOptions, Scores, benign_training_rows, benign_validation_mask,
                                 check_table)
from deepids.models.params import COMMON, MAX_WIDTH, THRESHOLD, TRAINING, Interval, Options, Widths
from deepids.models.registry import register
from deepids.models.training import fit_network, record_batches, resolve_device, seed_everything

SCORE_METHODS = ("reconstruction", "discriminator", "latent-search")


def _mlp(widths: list[int], final_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2 or final_activation:
            layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class GANNet(nn.Module):
    """Generator, discriminator and encoder of the GAN detector (pure torch)."""

    def __init__(self, n_features: int, latent_dim: int = 16,
                 generator_hidden: tuple[int, ...] = (32, 64, 128, 128, 256, 256),
                 discriminator_hidden: tuple[int, ...] = (256, 128, 64, 32),
                 encoder_hidden: tuple[int, ...] = (128, 64)):
        super().__init__()
        self.latent_dim = latent_dim
        self.generator = _mlp([latent_dim, *generator_hidden, n_features])
        self.disc_body = _mlp([n_features, *discriminator_hidden], final_activation=True)
        self.disc_head = nn.Linear(discriminator_hidden[-1], 1)
        self.encoder = _mlp([n_features, *encoder_hidden, latent_dim])

    def discriminate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logit, penultimate features)."""
        h = self.disc_body(x)
        return self.disc_head(h).squeeze(-1), h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(self.encoder(x))


def encoder_loss(network: GANNet, batch, kappa: float = 1.0) -> torch.Tensor:
    """izi_f: residual of x through G(E(x)) plus the discriminator feature distance (mean over the batch)."""
    (x,) = batch
    rebuilt = network(x)
    _, fx = network.discriminate(x)
    _, fr = network.discriminate(rebuilt)
    return F.mse_loss(rebuilt, x) + kappa * F.mse_loss(fr, fx)


def gan_step(learning_rate: float, smoothing: float = 0.9):
    """The alternating update for `fit_network(step_fn=...)`; the passed optimizer is the discriminator's.

    `step.state_dict()` / `step.load_state_dict()` carry the generator's and encoder's optimizers
    through training checkpoints (a loaded state is applied when the optimizers are made).
    """
    state: dict = {}
    pending: dict = {}

    def step(network: GANNet, optimizer, loss_fn, batch) -> float:
        if not state:
            state["g"] = torch.optim.Adam(network.generator.parameters(), lr=learning_rate, betas=(0.5, 0.999))
            state["e"] = torch.optim.Adam(network.encoder.parameters(), lr=learning_rate, betas=(0.5, 0.999))
            for name, saved in pending.items():
                state[name].load_state_dict(saved)
        (x,) = batch
        n = len(x)
        # 1. discriminator: real (smoothed) vs generated, generator frozen
        z = torch.randn(n, network.latent_dim, device=x.device)
        with torch.no_grad():
            fake = network.generator(z)
        optimizer.zero_grad(set_to_none=True)
        real_logit, _ = network.discriminate(x)
        fake_logit, _ = network.discriminate(fake)
        d_loss = (F.binary_cross_entropy_with_logits(real_logit, torch.full_like(real_logit, smoothing))
                  + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
        d_loss.backward()
        optimizer.step()
        # 2. generator through the frozen discriminator (non-saturating)
        state["g"].zero_grad(set_to_none=True)
        z = torch.randn(n, network.latent_dim, device=x.device)
        logit, _ = network.discriminate(network.generator(z))
        g_loss = F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
        g_loss.backward()
        state["g"].step()
        # 3. encoder inverts the frozen generator
        state["e"].zero_grad(set_to_none=True)
        e_loss = loss_fn(network, batch)
        e_loss.backward()
        state["e"].step()
        optimizer.zero_grad(set_to_none=True)     # the encoder loss reached D and G too; drop those gradients
        state["g"].zero_grad(set_to_none=True)
        return float(e_loss.detach())

    step.state_dict = lambda: {name: opt.state_dict() for name, opt in state.items()}
    step.load_state_dict = pending.update
    return step


@register
class GANDetector(BaseDetector):
    """Unsupervised: a GAN trained on benign records; scores records by how badly they fit it."""

    model_name = "gan"
    _parameter_constraints = {
        **COMMON, **TRAINING, **THRESHOLD, "latent_dim": [Interval(int, 1, MAX_WIDTH)],
        "generator_hidden": [Widths()], "discriminator_hidden": [Widths()], "encoder_hidden": [Widths(0)],
        "score_method": [Options(SCORE_METHODS)], "kappa": [Interval(float, 0, 1e6)],
        "latent_steps": [Interval(int, 0, 10_000)], "clip": [Interval(float, 0, None, "neither")],
        "max_records": [None, Interval(int, 2, None)],
    }
    _fitted_attribute = "network_"

    def __init__(self, latent_dim: int = 16, generator_hidden: tuple[int, ...] = (32, 64, 128, 128, 256, 256),
                 discriminator_hidden: tuple[int, ...] = (256, 128, 64, 32), encoder_hidden: tuple[int, ...] = (128, 64),
                 score_method: str = "reconstruction", kappa: float = 1.0, latent_steps: int = 20,
                 epochs: int = 8, batch_size: int = 256, learning_rate: float = 1e-3, patience: int = 3,
                 validation_fraction: float = 0.2, threshold_method: str = "percentile",
                 threshold_percentile: float = 99.0, threshold_fpr: float = 0.01,
                 threshold_value: float | None = None, clip: float = 3.0, max_records: int | None = 30_000,
                 seed: int = 0, device: str | None = None, verbose: bool = True):
        self.latent_dim = latent_dim
        self.generator_hidden = tuple(generator_hidden)
        self.discriminator_hidden = tuple(discriminator_hidden)
        self.encoder_hidden = tuple(encoder_hidden)
        self.score_method = score_method
        self.kappa = kappa
        self.latent_steps = latent_steps
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
        self.max_records = max_records
        self.seed = seed
        self.device = device
        self.verbose = verbose
        self.threshold_ = None
        self.training_summary_ = {}

    def _build_network(self, n_features: int) -> GANNet:
        return GANNet(n_features, self.latent_dim, self.generator_hidden, self.discriminator_hidden,
                      self.encoder_hidden)

    def _fit(self, X: pl.DataFrame, y, options: FitOptions) -> np.ndarray:
        table, benign, n_attacks = benign_training_rows(X, y, minimum=2)
        sampled_from = table.height
        if self.max_records and table.height > self.max_records:     # a uniform sample keeps training short
            keep = np.sort(np.random.default_rng(self.seed).choice(table.height, self.max_records, replace=False))
            table = table[keep.tolist()]
        is_val = benign_validation_mask(table.height, self.validation_fraction, self.seed)
        fit_rows = table.filter(pl.Series(~is_val))
        self._use_preprocessor(fit_preprocessor(fit_rows, feature_columns(X), clip=self.clip))
        features = torch.from_numpy(self.preprocessor_.transform(table))
        seed_everything(self.seed)
        self.network_ = self._build_network(features.shape[1])
        disc_params = list(self.network_.disc_body.parameters()) + list(self.network_.disc_head.parameters())
        config = self._training_config(options, fingerprint={"records": X.height})
        kappa = self.kappa
        history = fit_network(
            self.network_, lambda net, batch: encoder_loss(net, batch, kappa),
            record_batches(features[~torch.from_numpy(is_val)], None, self.batch_size, shuffle=True),
            record_batches(features[torch.from_numpy(is_val)], None, 4096, shuffle=False),
            config, n_train=int((~is_val).sum()), step_fn=gan_step(self.learning_rate),
            optimizer=torch.optim.Adam(disc_params, lr=self.learning_rate, betas=(0.5, 0.999)),
            description="gan")
        self.network_.to("cpu").eval()
        val_scores = self._score_matrix(features[torch.from_numpy(is_val)].numpy()).score
        self.training_summary_ = {
            "records": X.height, "benign_records": sampled_from, "sampled_records": table.height,
            "attack_records_left_out": n_attacks,
            "train_records": int((~is_val).sum()), "validation_records": int(is_val.sum()),
            "labelled": benign is not None, "features": len(self.feature_names_),
            "dropped_constant": self.preprocessor_.dropped_constant_, "score_method": self.score_method,
            "history": history.to_dict(),
        }
        return val_scores

    # ---------------------------------------------------------------- scoring
    def score_records(self, X: pl.DataFrame, method: str | None = None) -> Scores:
        """The base's scoring, with another `score_method` for this call when `method` is given."""
        if method is None:
            return super().score_records(X)
        X = check_table(X)
        self._check_fitted()
        return self._score_matrix(self.preprocessor_.transform(X), method)

    def _score_records(self, X: pl.DataFrame) -> Scores:
        return self._score_matrix(self.preprocessor_.transform(X))

    def _score_matrix(self, features: np.ndarray, method: str | None = None, batch_size: int = 4096) -> Scores:
        method = method or self.score_method
        if method not in SCORE_METHODS:
            raise ConfigError(f"score method must be one of {SCORE_METHODS}, got {method!r}")
        device = resolve_device(self.device)
        net = self.network_.to(device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        X = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        n = len(X)
        score = np.empty(n, dtype=np.float32)
        ferr = np.empty((n, X.shape[1]), dtype=np.float32)
        for start in range(0, n, batch_size):
            x = X[start:start + batch_size].to(device)
            with torch.no_grad():
                z = net.encoder(x)
            if method == "latent-search":
                z = self._latent_search(net, x, z)
            with torch.no_grad():
                rebuilt = net.generator(z)
                logit, fx = net.discriminate(x)
                _, fr = net.discriminate(rebuilt)
                residual = (rebuilt - x) ** 2
                if method == "discriminator":
                    s = -logit
                elif method == "latent-search":
                    s = 0.9 * residual.mean(dim=1) + 0.1 * ((fr - fx) ** 2).mean(dim=1)
                else:
                    s = residual.mean(dim=1) + self.kappa * ((fr - fx) ** 2).mean(dim=1)
            stop = start + len(x)
            score[start:stop] = s.cpu().numpy()
            ferr[start:stop] = residual.cpu().numpy()
        return Scores(score=score, feature_error=ferr, feature_names=self.feature_names_)

    def _latent_search(self, net: GANNet, x: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=0.05)
        with torch.no_grad():
            _, fx = net.discriminate(x)
        for _ in range(self.latent_steps):
            opt.zero_grad(set_to_none=True)
            rebuilt = net.generator(z)
            _, fr = net.discriminate(rebuilt)
            loss = (0.9 * ((rebuilt - x) ** 2).mean(dim=1) + 0.1 * ((fr - fx) ** 2).mean(dim=1)).sum()
            loss.backward()
            opt.step()
        return z.detach()

    # ------------------------------------------------------------ persistence
    def _state(self) -> dict:
        return self._feature_state()

    def _tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.network_.state_dict())

    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self._restore_features(state)
        self.network_ = self._load_network(lambda: self._build_network(len(self.feature_names_)), tensors)
