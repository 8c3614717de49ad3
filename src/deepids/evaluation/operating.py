"""A threshold a user can reason about: false alarms per 10,000 flows (or per day) and the
detection rate to expect there, both measured on training records the model did not learn from.

Every model holds records back while training (early stopping, its threshold); those records,
and for detectors trained on benign traffic the labelled attack records they left out, are the
validation set here. :func:`held_out_rows` finds them again from the model's seed and
fractions, :func:`operating_point` scores them, and :func:`calibrate_false_alarms` moves the
threshold to a target number of false alarms per 10,000 benign flows.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from deepids.errors import ConfigError
from deepids.io.schema import BENIGN, LABEL
from deepids.models.base import benign_mask, benign_validation_mask
from deepids.thresholds import Threshold, threshold_fpr

PER = 10_000


def _benign_detector_mask(model, benign: np.ndarray) -> np.ndarray | None:
    """Detectors trained on benign rows: their benign validation rows, and every attack row."""
    owner = model.members_[0] if getattr(model, "members_", None) else model
    n = int(benign.sum())
    if hasattr(owner, "validation_mask"):
        val = owner.validation_mask(n)
    elif hasattr(owner, "validation_fraction") and "benign_records" in getattr(owner, "training_summary_", {}):
        val = benign_validation_mask(n, owner.validation_fraction, owner.seed)
    else:
        return None
    mask = np.ones(len(benign), dtype=bool)
    mask[benign] = val
    return mask


def held_out_rows(model, X: pl.DataFrame) -> np.ndarray | None:
    """True for the rows of the training table `X` the fitted model did not learn from; None
    when the model does not say (then no estimate is made)."""
    from deepids.models.supervised import TorchClassifier
    from deepids.models.two_stage import TwoStageDetector

    benign = benign_mask(X)
    if benign is None:
        return None
    if isinstance(model, TwoStageDetector):
        draws = np.random.default_rng(model.seed).random(X.height)
        inner = held_out_rows(model.detector_, X)
        return None if inner is None else inner & (draws < model.validation_fraction)
    if isinstance(model, TorchClassifier):
        return np.random.default_rng(model.seed).random(X.height) < model.validation_fraction
    if "benign_records" in getattr(model, "training_summary_", {}) or getattr(model, "members_", None):
        return _benign_detector_mask(model, benign)
    return None


def operating_point(model, X: pl.DataFrame) -> dict | None:
    """False alarms and detection at the model's threshold on its held-out training rows."""
    rows = held_out_rows(model, X)
    if rows is None or not rows.any():
        return None
    held = X.filter(pl.Series(rows))
    flagged = model.score_records(held).score > model.threshold_.value
    benign = held.get_column(LABEL).to_numpy() == BENIGN
    out = {"validation_records": held.height, "benign": int(benign.sum()), "attacks": int((~benign).sum()),
           "false_alarm_rate": float(flagged[benign].mean()) if benign.any() else None,
           "detection_rate": float(flagged[~benign].mean()) if (~benign).any() else None}
    out["false_alarms_per_10k"] = None if out["false_alarm_rate"] is None else PER * out["false_alarm_rate"]
    per_day = flows_per_day(X)
    if per_day and out["false_alarm_rate"] is not None:
        out["flows_per_day"] = per_day
        out["false_alarms_per_day"] = per_day * out["false_alarm_rate"]
    return out


def flows_per_day(X: pl.DataFrame) -> float | None:
    """Records per day over the table's time range (None without timestamps or under an hour)."""
    if "timestamp" not in X.columns:
        return None
    ts = X.get_column("timestamp").drop_nulls()
    if ts.len() < 2:
        return None
    seconds = (ts.max() - ts.min()).total_seconds()
    return None if seconds < 3600 else X.height * 86_400 / seconds


def calibrate_false_alarms(model, X: pl.DataFrame, per_10k: float) -> Threshold:
    """Set the model's threshold so that at most `per_10k` of every 10,000 held-out benign
    training flows are flagged; returns the new threshold."""
    if not 0 < per_10k < PER:
        raise ConfigError(f"--false-alarms is a count per 10,000 benign flows, between 0 and 10000; got {per_10k}")
    rows = held_out_rows(model, X)
    benign = benign_mask(X)
    if rows is None or benign is None or not (rows & benign).any():
        raise ConfigError(f"{model.model_name}: no held-out benign training records to set a false-alarm "
                          f"target on (it needs labelled training data)")
    scores = model.score_records(X.filter(pl.Series(rows & benign))).score
    threshold = threshold_fpr(scores, per_10k / PER)
    threshold.params = {"fpr": per_10k / PER, "false_alarms_per_10k": per_10k}   # an fpr target, said per 10k
    threshold.note = (f"at most {per_10k:g} false alarms per 10,000 benign flows, on "
                      f"{threshold.n_scores:,} held-out benign training flows")
    if threshold.n_scores * per_10k < PER:
        threshold.note += (f" (too few to measure {per_10k:g} per 10,000: the threshold is the highest of "
                           f"their scores; train on more benign traffic for a finer target)")
    model.threshold_ = threshold
    return threshold


def describe(point: dict | None) -> str:
    """One line for the end of `train`."""
    if point is None:
        return "expected rates: not estimated (no labelled held-out training records)"
    parts = []
    if point["false_alarms_per_10k"] is not None:
        line = f"{point['false_alarms_per_10k']:.1f} false alarms per 10,000 benign flows"
        if "false_alarms_per_day" in point:
            line += f" (about {point['false_alarms_per_day']:,.0f} a day at {point['flows_per_day']:,.0f} flows/day)"
        parts.append(line)
    if point["detection_rate"] is not None:
        parts.append(f"{100 * point['detection_rate']:.1f} % of attack flows detected")
    return (f"expected at this threshold, on {point['validation_records']:,} held-out training records "
            f"({point['benign']:,} benign, {point['attacks']:,} attack): " + "; ".join(parts))
