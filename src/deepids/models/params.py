"""Hyperparameter constraints, checked when `fit` starts and when a saved model is loaded.

Every model declares, for each `__init__` keyword, what values it takes (as scikit-learn's
`_parameter_constraints`): a list whose entries are an `Interval`, `Options`, `Widths`,
`Device()`, a type (`str`, `bool`, `dict`, `list`) or `None`. A value passes when any entry
accepts it. The contract test checks that every parameter of every registered model has one.

Upper bounds are generous for training and keep a model file from a stranger from asking for
absurd work (a window of 10^8 records, 10^8 latent-search steps) before anything is checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

from deepids.errors import ConfigError
from deepids.thresholds import METHODS

MAX_WIDTH = 65_536          # units of one layer
MAX_LAYERS = 64
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 24
MAX_SEQUENCE = 10_000


@dataclass(frozen=True)
class Interval:
    """A number of `kind` (int or float) between `low` and `high`; `closed`: both, left, right, neither."""

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def accepts(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, Integral if self.kind is int else Real):
            return False
        if not math.isfinite(value):
            return False
        lo_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        hi_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        return lo_ok and hi_ok

    def __str__(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            return f"{what} in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{what} {'>=' if self.closed in ('both', 'left') else '>'} {self.low:g}"
        if self.high is not None:
            return f"{what} {'<=' if self.closed in ('both', 'right') else '<'} {self.high:g}"
        return f"a finite {what[2:].strip()}" if self.kind is float else what


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple

    def accepts(self, value) -> bool:
        return isinstance(value, (str, int, float)) and not isinstance(value, bool) and value in self.values

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Widths:
    """A sequence of `min_items`..`max_items` integers in [1, `high`] (layer widths by default)."""

    min_items: int = 1
    high: int = MAX_WIDTH
    max_items: int = MAX_LAYERS
    what: str = "layer widths"

    def accepts(self, value) -> bool:
        if not isinstance(value, (list, tuple)) or not self.min_items <= len(value) <= self.max_items:
            return False
        return all(Interval(int, 1, self.high).accepts(v) for v in value)

    def __str__(self) -> str:
        return f"a list of {self.min_items} to {self.max_items} {self.what}, each in [1, {self.high}]"


@dataclass(frozen=True)
class Device:
    """Where torch runs: None or 'auto' (cuda when present), 'cpu', 'cuda', 'cuda:N', 'mps'."""

    def accepts(self, value) -> bool:
        if value is None or value == "auto":
            return True
        if not isinstance(value, str):
            return False
        kind, _, index = value.partition(":")
        return kind in ("cpu", "cuda", "mps") and (not index or (index.isdigit() and len(index) < 4))

    def __str__(self) -> str:
        return "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def _accepts(constraint, value) -> bool:
    if constraint is None:
        return value is None
    if isinstance(constraint, type):
        if constraint is bool:
            return isinstance(value, bool)
        return isinstance(value, constraint) and not isinstance(value, bool)
    return constraint.accepts(value)


def _describe(constraint) -> str:
    if constraint is None:
        return "None"
    if isinstance(constraint, type):
        return {str: "a string", bool: "true or false", dict: "a mapping", list: "a list"}.get(
            constraint, constraint.__name__)
    return str(constraint)


def validate_parameters(owner: str, params: dict, constraints: dict[str, list]) -> None:
    """ConfigError naming the first parameter whose value no constraint accepts."""
    for name, allowed in constraints.items():
        if name not in params:
            continue
        value = params[name]
        if not any(_accepts(c, value) for c in allowed):
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ConfigError(f"{owner}: {name} must be {' or '.join(_describe(c) for c in allowed)}; got {shown}")


POSITIVE = [Interval(int, 1)]
EPOCHS = [Interval(int, 1, MAX_EPOCHS)]
BATCH = [Interval(int, 1, MAX_BATCH)]
FRACTION = [Interval(float, 0, 1, "neither")]      # a validation split: never all, never none
SEED = [Interval(int, 0, 2**63 - 1)]
RATE = [Interval(float, 0, 10, "right")]
COMMON = {"seed": SEED, "verbose": [bool], "device": [Device()]}
TRAINING = {"epochs": EPOCHS, "batch_size": BATCH, "learning_rate": RATE, "patience": [Interval(int, 1, MAX_EPOCHS)],
            "validation_fraction": FRACTION}
THRESHOLD = {
    "threshold_method": [Options(METHODS)],
    "threshold_percentile": [Interval(float, 0, 100, "right")],
    "threshold_fpr": [Interval(float, 0, 1, "neither")],
    "threshold_value": [Interval(float), None],
}
