"""Fitted feature pipeline for flow records.

`FlowPreprocessor.fit` learns everything from training data only; `transform` applies it to
any later data. Its state is plain lists and numbers, saved as JSON with the model.

Steps, in order:
1. numeric columns: `+inf`/`-inf` -> the largest/smallest finite training value of that column,
   NaN -> the training median (CICFlowMeter writes `Infinity`/`NaN` rates for zero-length flows);
2. signed log1p, `sign(x) * log1p(|x|)`: byte counts, rates and inter-arrival times span up to
   twelve orders of magnitude, and negative IAT / window values stay ordered;
3. standard scaling with the training mean and standard deviation, then clipping to `±clip` (3)
   so one wild value cannot dominate a reconstruction error;
4. the destination port, log-scaled like the rest (it separates well-known, registered and
   ephemeral ports), and the rarity of identifier-like values (destination port, initial TCP
   windows and their pair): `-log10(share of training records with that value + 1e-5)`, so a
   port scan's rare ports and TCP fingerprints stand out although they are no quantities;
5. categorical columns (NSL-KDD's protocol/service/flag): one-hot with a vocabulary fitted on
   training data, plus an "unseen" slot.
Columns constant on the training data carry no information and are dropped (recorded).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from deepids.errors import SchemaError
from deepids.io.roles import column_roles, feature_names

UNSEEN = "<unseen>"
RARITY_JOIN = "+"
# single columns, or several joined by "+" for the rarity of their combination: the pair of
# initial TCP windows is a fingerprint of the two TCP stacks
FREQUENCY_COLUMNS = ("dst_port", "Init_Win_bytes_forward", "Init_Win_bytes_backward",
                     "Init_Win_bytes_forward+Init_Win_bytes_backward")
MAX_FREQUENCY_VALUES = 5000
RARITY_FLOOR = 1e-5


def feature_columns(df: pl.DataFrame) -> list[str]:
    """The columns of a canonical table that are model inputs: those whose role is `feature`
    (see `deepids.io.roles`: never the label, a second label-like column, an identifier, a
    time, entity or metadata column, or a constant)."""
    return feature_names(column_roles(df))


def signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class FlowPreprocessor:
    clip: float = 3.0
    frequency: tuple[str, ...] | list[str] = FREQUENCY_COLUMNS
    port_feature: bool = True
    scaling: str = "standard"       # or "minmax" (to [0, 1] on training data, as the published code)
    numeric_: list[str] = field(default_factory=list)
    categorical_: list[str] = field(default_factory=list)
    dropped_constant_: list[str] = field(default_factory=list)
    fill_nan_: list[float] = field(default_factory=list)
    fill_posinf_: list[float] = field(default_factory=list)
    fill_neginf_: list[float] = field(default_factory=list)
    mean_: list[float] = field(default_factory=list)
    std_: list[float] = field(default_factory=list)
    vocabularies_: dict[str, list[str]] = field(default_factory=dict)
    frequencies_: dict[str, dict[str, float]] = field(default_factory=dict)
    roles_: list[dict] = field(default_factory=list)    # every input column's role and why (io.roles)
    numeric_sources_: list[str] = field(default_factory=list)   # input columns read as numbers

    # ---------------------------------------------------------------- fit
    def fit(self, df: pl.DataFrame, columns: list[str] | None = None) -> "FlowPreprocessor":
        columns = feature_columns(df) if columns is None else list(columns)
        if not columns:
            raise SchemaError("the data has no feature columns")
        if df.height == 0:
            raise SchemaError("cannot fit features on zero records")
        numeric = [c for c in columns if df.schema[c].is_numeric()]
        categorical = [c for c in columns if c not in numeric]
        self.roles_ = _input_roles(df, columns)
        self.frequencies_ = {}
        # rarity only of the columns the model may use: a chosen feature, or metadata (dst_port);
        # not of a feature left out of `columns` (--drop-columns on files read in chunks)
        usable = {r["column"] for r in self.roles_ if r["role"] in ("feature", "metadata")}
        for key in self.frequency:
            parts = key.split(RARITY_JOIN)
            if all(p in usable for p in parts):
                values = df.select(_rarity_key(parts)).to_series()
                counts = values.value_counts(sort=True).head(MAX_FREQUENCY_VALUES)
                self.frequencies_[key] = dict(zip(counts.get_column(values.name).to_list(),
                                                  (counts.get_column("count") / df.height).to_list()))
        numeric += [_freq_name(c) for c in self.frequencies_]
        if self.port_feature and "dst_port" in usable and "dst_port" not in numeric:
            numeric.append("dst_port")   # log-scaled: well-known, registered and ephemeral ranges

        raw = self._raw_matrix(df, numeric)
        finite = np.where(np.isfinite(raw), raw, np.nan)
        with np.errstate(all="ignore"):
            col_max = np.nanmax(finite, axis=0) if raw.size else np.zeros(0)
            col_min = np.nanmin(finite, axis=0) if raw.size else np.zeros(0)
            median = np.nanmedian(finite, axis=0) if raw.size else np.zeros(0)
        col_max, col_min, median = (np.nan_to_num(a, nan=0.0) for a in (col_max, col_min, median))
        filled = _fill(raw, median, col_max, col_min)
        logged = signed_log1p(filled)
        std = logged.std(axis=0)
        keep = std > 1e-12
        self.dropped_constant_ = [c for c, k in zip(numeric, keep) if not k]
        self.numeric_ = [c for c, k in zip(numeric, keep) if k]
        self.fill_nan_ = median[keep].tolist()
        self.fill_posinf_ = col_max[keep].tolist()
        self.fill_neginf_ = col_min[keep].tolist()
        if self.scaling == "minmax":
            lo, hi = logged[:, keep].min(axis=0), logged[:, keep].max(axis=0)
            self.mean_, self.std_ = lo.tolist(), (hi - lo).tolist()
        else:
            self.mean_ = logged[:, keep].mean(axis=0).tolist()
            self.std_ = std[keep].tolist()

        self.categorical_ = []
        self.vocabularies_ = {}
        for c in categorical:
            values = df.get_column(c).cast(pl.Utf8).fill_null(UNSEEN).unique().sort().to_list()
            if len(values) <= 1:
                self.dropped_constant_.append(c)
                continue
            self.categorical_.append(c)
            self.vocabularies_[c] = [v for v in values if v != UNSEEN]
        self.numeric_sources_ = [c for c in self.input_columns if c not in self.categorical_]
        return self

    # ---------------------------------------------------------- transform
    @property
    def input_columns(self) -> list[str]:
        """Columns the data must have to be transformed."""
        sources = {_freq_name(k): k.split(RARITY_JOIN) for k in self.frequencies_}
        return list(dict.fromkeys(c for name in self.numeric_ + self.categorical_ for c in sources.get(name, [name])))

    def _raw_matrix(self, df: pl.DataFrame, columns: list[str]) -> np.ndarray:
        exprs = self._source_exprs(columns)
        if not exprs:
            return np.zeros((df.height, 0), dtype=np.float64)
        return df.select(exprs).to_numpy().astype(np.float64, copy=False)

    @property
    def output_names(self) -> list[str]:
        """One name per model input dimension (numeric features, then one-hot slots)."""
        names = list(self.numeric_)
        for c in self.categorical_:
            names += [f"{c}={v}" for v in self.vocabularies_[c]] + [f"{c}={UNSEEN}"]
        return names

    @property
    def n_outputs(self) -> int:
        return len(self.output_names)

    def check_columns(self, df: pl.DataFrame) -> None:
        missing = [c for c in self.input_columns if c not in df.columns]
        if missing:
            shown = ", ".join(repr(c) for c in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise SchemaError(f"the data lacks {len(missing)} column(s) the model needs: {shown}{more}")
        schema = df.schema                  # built on every access: once here
        text = [c for c in self.numeric_sources_ if c in schema and not schema[c].is_numeric()
                and schema[c] != pl.Null]
        if text:
            raise SchemaError(f"column(s) {', '.join(repr(c) for c in text[:5])} held numbers when the model "
                              f"was trained and hold text here: the columns disagree with the model's "
                              f"(is this the same kind of file, read with the same --layout/--label-column?)")

    def transform(self, df: pl.DataFrame) -> np.ndarray:
        """Model inputs, float32, shape (n_records, n_outputs)."""
        self.check_columns(df)
        parts = [self._scaled_numeric(df)]
        for c in self.categorical_:
            vocab = self.vocabularies_[c]
            lookup = {v: i for i, v in enumerate(vocab)}
            codes = (df.get_column(c).cast(pl.Utf8)
                     .replace_strict(lookup, default=len(vocab), return_dtype=pl.Int64).to_numpy())
            onehot = np.zeros((df.height, len(vocab) + 1), dtype=np.float32)
            onehot[np.arange(df.height), codes] = 1.0
            parts.append(onehot)
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def _scaled_numeric(self, df: pl.DataFrame) -> np.ndarray:
        """Steps 1-4 for every numeric column, in place on one float64 matrix (no temporaries the
        size of the matrix but a mask of its negative cells): float32 (n, len(numeric_)).

        Measured on 200,000 real rows: about 4x less CPU than a polars expression per column,
        which materialises every intermediate column."""
        z = self._raw_matrix(df, self.numeric_)
        if not z.flags.writeable:                       # polars may lend its own buffer
            z = z.copy()
        bad = ~np.isfinite(z)
        if bad.any():                                   # step 1, on the few non-finite cells only
            rows, cols = np.nonzero(bad)
            v = z[rows, cols]
            z[rows, cols] = np.where(np.isnan(v), np.asarray(self.fill_nan_)[cols],
                                     np.where(v > 0, np.asarray(self.fill_posinf_)[cols],
                                              np.asarray(self.fill_neginf_)[cols]))
        negative = z < 0                                # step 2: sign(x) * log1p(|x|)
        np.abs(z, out=z)
        np.log1p(z, out=z)
        np.negative(z, out=z, where=negative)
        z -= np.asarray(self.mean_)                     # step 3
        z /= np.asarray(self.std_)
        np.clip(z, -self.clip, self.clip, out=z)
        return z.astype(np.float32, order="C")

    def _source_exprs(self, columns: list[str]) -> list[pl.Expr]:
        sources = {_freq_name(k): k for k in self.frequencies_}
        exprs = []
        for c in columns:
            if c in sources:
                key = sources[c]
                share = _rarity_key(key.split(RARITY_JOIN)).replace_strict(
                    self.frequencies_[key], default=0.0, return_dtype=pl.Float64)
                exprs.append((-(share + RARITY_FLOOR).log10()).alias(c))   # rarity: 0 common .. 5 unseen
            else:
                exprs.append(pl.col(c).cast(pl.Float64))
        return exprs

    # -------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in (
            "clip", "frequency", "port_feature", "scaling", "numeric_", "categorical_", "dropped_constant_", "fill_nan_", "fill_posinf_",
            "fill_neginf_", "mean_", "std_", "vocabularies_", "frequencies_", "roles_", "numeric_sources_")}

    @classmethod
    def from_dict(cls, state: dict) -> "FlowPreprocessor":
        state = dict(state)
        state["frequency"] = tuple(state.get("frequency", ()))
        return cls(**state)



def fit_preprocessor(rows: pl.DataFrame, columns: list[str], clip: float = 3.0) -> FlowPreprocessor:
    """A preprocessor fitted on `rows` (training rows only); refuses data with no usable feature column."""
    preprocessor = FlowPreprocessor(clip=clip).fit(rows, columns)
    if not preprocessor.output_names:
        raise SchemaError("no usable feature columns: every column is constant in the training data")
    return preprocessor

def _input_roles(df: pl.DataFrame, columns: list[str]) -> list[dict]:
    """The role of every column of the training table: the model inputs are `columns`."""
    chosen = set(columns)
    out = []
    for r in column_roles(df):
        if r.column in chosen and r.role != "feature":
            out.append({"column": r.column, "role": "feature", "reason": "chosen by the caller"})
        elif r.column not in chosen and r.role == "feature":
            out.append({"column": r.column, "role": "excluded", "reason": "not among the model's input columns"})
        else:
            out.append(r.to_dict())
    return out


def _rarity_key(columns: list[str]) -> pl.Expr:
    exprs = [pl.col(c).cast(pl.Utf8).fill_null("") for c in columns]
    return (exprs[0] if len(exprs) == 1 else pl.concat_str(exprs, separator="|")).alias("key")


def _freq_name(column: str) -> str:
    return f"{column} rarity"


def _fill(raw: np.ndarray, nan: np.ndarray, posinf: np.ndarray, neginf: np.ndarray) -> np.ndarray:
    out = np.array(raw, dtype=np.float64, copy=True)
    nan_mask = np.isnan(out)
    if nan_mask.any():
        out[nan_mask] = np.broadcast_to(nan, out.shape)[nan_mask]
    pos = np.isposinf(out)
    if pos.any():
        out[pos] = np.broadcast_to(posinf, out.shape)[pos]
    neg = np.isneginf(out)
    if neg.any():
        out[neg] = np.broadcast_to(neginf, out.shape)[neg]
    return out
