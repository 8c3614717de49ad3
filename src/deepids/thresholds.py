"""Thresholds, kept apart from fitting: a threshold is chosen on scores, and remembers how.

Strategies: a percentile of benign validation scores (default, the 99th), a target
false-positive rate on benign scores, a fixed value, and the best F1 on labelled scores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import math
from numbers import Integral, Real

import numpy as np

from deepids.errors import ConfigError

METHODS = ("percentile", "fpr", "fixed", "best-f1")


@dataclass
class Threshold:
    value: float
    method: str
    params: dict = field(default_factory=dict)
    n_scores: int = 0            # how many scores it was chosen on
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Threshold":
        """Rebuild a saved threshold; ValueError when a field is missing or of the wrong type."""
        if not isinstance(d, dict):
            raise ValueError(f"a threshold is a mapping, found {type(d).__name__}")
        value = d.get("value")
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise ValueError(f"the threshold value must be a finite number, found {value!r}")
        if d.get("method") not in METHODS:
            raise ValueError(f"unknown threshold method {d.get('method')!r}")
        params, n_scores, note = d.get("params", {}), d.get("n_scores", 0), d.get("note", "")
        if not isinstance(params, dict) or not isinstance(note, str):
            raise ValueError("the threshold's params must be a mapping and its note a string")
        if isinstance(n_scores, bool) or not isinstance(n_scores, Integral) or n_scores < 0:
            raise ValueError(f"the threshold's n_scores must be a count, found {n_scores!r}")
        return cls(float(value), d["method"], params, int(n_scores), note)


def threshold_percentile(benign_scores: np.ndarray, percentile: float = 99.0) -> Threshold:
    if not 0 < percentile <= 100:
        raise ConfigError(f"percentile must be in (0, 100], got {percentile}")
    s = _finite(benign_scores)
    return Threshold(float(np.percentile(s, percentile)), "percentile", {"percentile": percentile}, len(s),
                     f"{percentile:g}th percentile of {len(s)} benign validation scores")


def threshold_fpr(benign_scores: np.ndarray, fpr: float = 0.01) -> Threshold:
    """Smallest threshold whose false-positive rate on benign scores is at most `fpr`."""
    if not 0 < fpr < 1:
        raise ConfigError(f"target false-positive rate must be between 0 and 1, got {fpr}")
    s = np.sort(_finite(benign_scores))
    k = int(np.floor(fpr * len(s)))          # at most k benign scores may lie above
    value = float(s[len(s) - 1 - k]) if k < len(s) else float(s[0])
    return Threshold(value, "fpr", {"fpr": fpr}, len(s),
                     f"false-positive rate <= {fpr:g} on {len(s)} benign validation scores")


def threshold_fixed(value: float) -> Threshold:
    return Threshold(float(value), "fixed", {"value": float(value)}, 0, "fixed by the user")


def threshold_best_f1(scores: np.ndarray, y: np.ndarray) -> Threshold:
    """The threshold maximising F1 on labelled scores (y: 1 = attack)."""
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y).astype(int)
    mask = np.isfinite(scores)
    scores, y = np.asarray(scores)[mask], y[mask]
    if y.min(initial=1) == y.max(initial=0):
        raise ConfigError("best-f1 needs labelled data with both benign and attack records")
    precision, recall, thresholds = precision_recall_curve(y, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1]))
    return Threshold(float(thresholds[best]), "best-f1", {"f1": round(float(f1[best]), 6)}, len(scores),
                     f"best F1 on {len(scores)} labelled validation scores")


def calibrate_threshold(method: str, benign_scores: np.ndarray | None = None, *, percentile: float = 99.0,
                        fpr: float = 0.01, value: float | None = None, scores: np.ndarray | None = None,
                        y: np.ndarray | None = None) -> Threshold:
    """Dispatch on `method` (one of METHODS)."""
    if method == "percentile":
        return threshold_percentile(_need(benign_scores, method), percentile)
    if method == "fpr":
        return threshold_fpr(_need(benign_scores, method), fpr)
    if method == "fixed":
        if value is None:
            raise ConfigError("the fixed threshold needs a value (--threshold-value)")
        return threshold_fixed(value)
    if method == "best-f1":
        if scores is None or y is None:
            raise ConfigError("best-f1 needs labelled validation data with attacks in it")
        return threshold_best_f1(scores, y)
    raise ConfigError(f"unknown threshold method {method!r}; choose one of {', '.join(METHODS)}")


def _need(s: np.ndarray | None, method: str) -> np.ndarray:
    if s is None or len(s) == 0:
        raise ConfigError(f"the {method} threshold needs benign validation scores")
    return s


def _finite(s: np.ndarray) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        raise ConfigError("no finite scores to choose a threshold from")
    return s
