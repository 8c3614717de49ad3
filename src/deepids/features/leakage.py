"""The leakage guard: features that give the answer away, and test rows the model has seen.

Before training, :func:`find_leaks` looks at every feature column alone against the labels:

* a **relabelling** of the label: each value of the column goes with one label and each label
  with one value (a copy of the label as a number, `is_attack` beside `attack_cat`);
* a column that **alone separates** benign from attack records almost perfectly: the best
  single cut of a numeric column, or the majority label of each value of a categorical one,
  reaches a balanced accuracy of at least `separation` (0.995). Real flow features do not:
  the best single CICFlowMeter feature on the bundled CICIDS2017 sample reaches 0.75, and
  none on NSL-KDD or CSE-CIC-IDS2018 reaches 0.95.

:func:`check_leakage` turns the findings into a warning (logged) or, with `strict`, a
`LeakageError` naming the columns. The models never see this: it is a check of the data.
Training from files read in chunks runs it on :func:`stream_sample`, a uniform sample of every
chunk drawn in one pass with bounded memory.

After training, :func:`row_fingerprints` gives each row a stable 64-bit hash of its feature
values; the CLI saves the training rows' hashes beside the model (`training_rows.safetensors`)
so `deepids evaluate` can count test rows that duplicate training rows, as `benchmark` does.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from deepids.errors import SchemaError
from deepids.io.schema import BENIGN, LABEL

log = logging.getLogger(__name__)

SEPARATION = 0.995
MAX_CATEGORIES = 100          # a categorical column with more values would separate by memorising
FINGERPRINT_FILE = "training_rows.safetensors"
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


class LeakageError(SchemaError):
    """A feature gives the label away (raised by the strict leakage guard)."""


@dataclass
class LeakFinding:
    column: str
    kind: str            # "relabelling" | "separates"
    score: float         # balanced accuracy of the column alone (1.0 for a relabelling)
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def _binary_target(labels: np.ndarray) -> np.ndarray | None:
    """1 for attack rows, 0 for benign; without a benign class, the commonest label against the rest."""
    values, counts = np.unique(labels, return_counts=True)
    if len(values) < 2:
        return None
    negative = BENIGN if BENIGN in values else values[np.argmax(counts)]
    return (labels != negative).astype(np.int8)


def _best_cut(x: np.ndarray, y: np.ndarray) -> float:
    """Balanced accuracy of the best single threshold on x (either direction), ties kept together."""
    ok = ~np.isnan(x)
    x, y = x[ok], y[ok]
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    last_of_run = np.r_[xs[1:] != xs[:-1], True]          # cut only between distinct values
    pos_below = np.cumsum(ys)[last_of_run]
    neg_below = np.cumsum(1 - ys)[last_of_run]
    # rows <= cut called benign: TNR = neg_below / n_neg, TPR = (n_pos - pos_below) / n_pos
    ba = 0.5 * (neg_below / n_neg + (n_pos - pos_below) / n_pos)
    return float(max(ba.max(), (1 - ba).max()))


def _majority_per_value(codes: np.ndarray, y: np.ndarray) -> float:
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    pos = np.bincount(codes, weights=y, minlength=codes.max() + 1)
    tot = np.bincount(codes, minlength=codes.max() + 1)
    called_attack = pos / n_pos > (tot - pos) / n_neg      # balanced: compare class shares
    tpr = pos[called_attack].sum() / n_pos
    tnr = (tot - pos)[~called_attack].sum() / n_neg
    return float(0.5 * (tpr + tnr))


def _is_relabelling(col: pl.Series, labels: pl.Series) -> bool:
    pairs = pl.DataFrame({"c": col, "l": labels}).unique()
    n_labels = labels.n_unique()
    return n_labels >= 2 and pairs.height == n_labels and col.n_unique() == n_labels


def find_leaks(df: pl.DataFrame, columns: list[str] | None = None, *, separation: float = SEPARATION,
               max_rows: int = 500_000, seed: int = 0) -> list[LeakFinding]:
    """Feature columns that alone give the label away (see the module docstring); [] without labels."""
    from deepids.features.preprocess import feature_columns

    if LABEL not in df.columns or df.height < 2:
        return []
    if df.height > max_rows:          # a uniform sample is plenty to see a near-perfect split
        df = df.sample(max_rows, seed=seed)
    columns = feature_columns(df) if columns is None else columns
    labels = df.get_column(LABEL).cast(pl.Utf8)
    y = _binary_target(labels.to_numpy().astype(object))
    if y is None:
        return []
    findings = []
    for c in columns:
        s = df.get_column(c)
        if s.n_unique() <= 1:
            continue
        if _is_relabelling(s, labels):
            findings.append(LeakFinding(c, "relabelling", 1.0, f"column {c!r} is a relabelling of the label: each of "
                                        f"its values goes with exactly one label"))
            continue
        if s.dtype.is_numeric():
            score = _best_cut(s.cast(pl.Float64).fill_nan(None).fill_null(np.nan).to_numpy(), y)
        elif s.n_unique() <= MAX_CATEGORIES:
            codes = s.cast(pl.Utf8).fill_null("").cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
            score = _majority_per_value(codes, y)
        else:
            continue
        if score >= separation:
            findings.append(LeakFinding(c, "separates", round(score, 4),
                                        f"column {c!r} alone separates benign from attack records with balanced "
                                        f"accuracy {score:.4f}"))
    return findings


def check_leakage(df: pl.DataFrame, columns: list[str] | None = None, *, strict: bool = False,
                  warn=None, separation: float = SEPARATION) -> list[LeakFinding]:
    """Run `find_leaks`; each finding is passed to `warn` (default: a logged warning), or with
    `strict` all of them raise one `LeakageError` naming the columns."""
    findings = find_leaks(df, columns, separation=separation)
    if findings and strict:
        raise LeakageError("possible label leak, refusing to train (--strict-leakage): "
                           + "; ".join(f.message for f in findings)
                           + ". Drop the column(s) with --drop-columns, or check how the data was labelled")
    for f in findings:
        text = f"possible label leak: {f.message}; a model would learn it instead of the traffic " \
               f"(drop it with --drop-columns {f.column!r})"
        (warn or log.warning)(text)
    return findings


STREAM_SAMPLE_ROWS = 100_000
_ORDER = "__deepids_leak_order"


def stream_sample(batches, rows: int = STREAM_SAMPLE_ROWS, seed: int = 0) -> tuple[pl.DataFrame | None,
                                                                                   pl.DataFrame | None]:
    """For training from files read in chunks (`train --stream`, `--engine ray`): the first
    chunk, on which the column roles are decided as `inspect` decides them, and a uniform
    sample of at most `rows` records over every chunk, benign and attack alike, in file order,
    for :func:`check_leakage`. Memory is bounded by one chunk and the sample. (None, None)
    when the batches hold no record."""
    first = sample = None
    rng = np.random.default_rng(seed)
    seen = 0
    for chunk, _ in batches:
        if not chunk.height:
            continue
        if first is None:
            first = chunk
        # bottom-k sampling: every record draws a random key; the `rows` smallest keys are kept
        keyed = chunk.with_columns(pl.Series("__key", rng.random(chunk.height)),
                                   pl.int_range(seen, seen + chunk.height, dtype=pl.Int64).alias(_ORDER))
        seen += chunk.height
        if sample is not None and sample.height >= rows:
            keyed = keyed.filter(pl.col("__key") < sample["__key"].max())
        pool = keyed if sample is None else pl.concat([sample, keyed], how="diagonal_relaxed")
        sample = pool.sort("__key").head(rows)
    if sample is None:
        return None, None
    return first, sample.sort(_ORDER).drop("__key", _ORDER)


# ------------------------------------------------------------------ training-row fingerprints
def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _text_hashes(s: pl.Series) -> np.ndarray:
    values = s.cast(pl.Utf8).fill_null("\x00null").to_numpy().astype(object)
    uniq, inverse = np.unique(values, return_inverse=True)
    table = np.asarray([int.from_bytes(hashlib.blake2b(str(u).encode(), digest_size=8).digest(), "little")
                        for u in uniq], dtype=np.uint64)
    return table[inverse]


def row_fingerprints(df: pl.DataFrame, columns: list[str]) -> np.ndarray:
    """A stable 64-bit hash of each row's values in `columns` (uint64, one per row): the same
    values give the same hash in any process and any polars version."""
    h = np.full(df.height, np.uint64(0x9E3779B97F4A7C15), dtype=np.uint64)
    for c in columns:
        s = df.get_column(c)
        if s.dtype.is_numeric():
            v = s.cast(pl.Float64).fill_null(np.nan).to_numpy().astype(np.float64)
            v = np.where(np.isnan(v), np.nan, v + 0.0)        # one NaN, and -0.0 == 0.0
            part = v.view(np.uint64)
        else:
            part = _text_hashes(s)
        with np.errstate(over="ignore"):
            h = _mix(h ^ _mix(part + np.uint64(len(c))))
    return h


def save_fingerprints(model_dir: str | Path, df: pl.DataFrame, columns: list[str]) -> Path:
    """Write the distinct training-row hashes beside a saved model."""
    import torch
    from safetensors.torch import save_file

    hashes = np.unique(row_fingerprints(df, columns))
    path = Path(model_dir) / FINGERPRINT_FILE
    save_file({"rows": torch.from_numpy(hashes.view(np.int64).copy())}, str(path),
              metadata={"columns": "\x1f".join(columns), "records": str(df.height)})
    return path


def load_fingerprints(model_dir: str | Path) -> tuple[np.ndarray, list[str]] | None:
    """(sorted training-row hashes, their columns), or None when the model has none."""
    from safetensors import safe_open

    path = Path(model_dir) / FINGERPRINT_FILE
    if not path.exists():
        return None
    with safe_open(str(path), framework="pt") as f:
        columns = (f.metadata() or {}).get("columns", "").split("\x1f")
        hashes = f.get_tensor("rows").numpy().view(np.uint64)
    return np.sort(hashes), columns


def count_seen(hashes: np.ndarray, df: pl.DataFrame, columns: list[str]) -> int:
    """How many rows of `df` have the values of a training row (on `columns`)."""
    if not len(hashes) or any(c not in df.columns for c in columns):
        return 0
    rows = row_fingerprints(df, columns)
    pos = np.clip(np.searchsorted(hashes, rows), 0, len(hashes) - 1)
    return int((hashes[pos] == rows).sum())
