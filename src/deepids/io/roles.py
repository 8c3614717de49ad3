"""Column roles: what each column of a canonical table is for, and why.

Every column gets one role, with the reason:

* ``feature`` — a model input;
* ``label`` — the chosen label (``label`` in the canonical table);
* ``identifier`` — names a row or a flow (``flow_id``, an ``id`` column, a monotone integer
  index, text unique per row): a model would learn the row, not the traffic;
* ``time`` — when the record happened (``timestamp``): it orders windows, it is no feature;
* ``entity`` — who the record belongs to (``src_ip``, ``dst_ip``): it groups windows;
* ``metadata`` — context kept beside the record (ports, protocol number of the CIC layouts);
* ``excluded`` — left out on purpose: a second label-like column (``attack_cat`` beside
  ``label``, ``is_attack`` beside ``class``: a feature would hand the model the answer), a
  column constant on the data, or one the user dropped.

Columns of the known schemas (the 76 CICFlowMeter features, NSL-KDD's 41, the event
features of log models) are features by name; the rules below judge only other columns,
the ones a generic table brings. The decision needs the data (uniqueness, monotonicity,
constancy), so it is made on the training table, saved with the model, and shown by
``deepids inspect``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import polars as pl

from deepids.errors import ConfigError
from deepids.io.schema import FLOW_FEATURES, LABEL, METADATA_COLUMNS, NSL_KDD_COLUMNS

ROLES = ("feature", "label", "identifier", "time", "entity", "metadata", "excluded")

# names (lower case, without a `.1` suffix the reader adds to a repeated name) that hold a label
_LABEL_LIKE = re.compile(
    r"^(label|labels|class|classes|classification|attack|attacks|attack_cat|attack_category|attack_type|"
    r"attack_name|category|target|is_attack|isattack|attack_flag|is_malicious|malicious|anomaly|is_anomaly|"
    r"outcome|ground_truth|groundtruth|truth|y|tag|verdict|threat|threat_type|difficulty|difficulty_level)$")
_IDENTIFIER = re.compile(r"^(id|_id|uid|uuid|idx|index|row|row_id|rowid|record_id|record_number|no|"
                         r"flow_id|flowid|flow id|conn_uid|unnamed: ?\d+)$")
_TIME = re.compile(r"^(timestamp|time|ts|date|datetime|stime|ltime|start_time|end_time|starttime|endtime|"
                   r"first_seen|last_seen|@timestamp)$")
_ENTITY = {"src_ip": "source address: groups records into windows",
           "dst_ip": "destination address: groups records into windows"}
_METADATA = {"src_port": "source port: ephemeral, says nothing about the traffic",
             "dst_port": "destination port: the preprocessor uses it as a log-scaled value and its rarity",
             "protocol": "protocol number: kept as context",
             "flow_id": None, "timestamp": None}
_SUFFIX = re.compile(r"\.\d+$")
MIN_ROWS_FOR_DATA_RULES = 20     # fewer rows: uniqueness and order say nothing
KNOWN_FEATURES = frozenset(FLOW_FEATURES) | frozenset(NSL_KDD_COLUMNS)


@dataclass(frozen=True)
class ColumnRole:
    column: str
    role: str
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def _known_features() -> frozenset[str]:
    from deepids.features.events import CONTEXT_FEATURES, EVENT_FEATURES   # log models' inputs are features by name

    return KNOWN_FEATURES | frozenset(EVENT_FEATURES) | frozenset(CONTEXT_FEATURES)


def _base_name(column: str) -> str:
    return _SUFFIX.sub("", column.strip()).lower()


def _is_monotone_index(s: pl.Series) -> bool:
    """Integer values, all distinct, strictly increasing or decreasing: a row counter."""
    if s.len() < MIN_ROWS_FOR_DATA_RULES or s.null_count():
        return False
    if not s.dtype.is_integer():
        if not s.dtype.is_float():
            return False
        finite = s.is_finite().all()
        if not finite or not bool((s == s.floor()).all()):
            return False
    d = s.diff().drop_nulls()
    return bool((d > 0).all() or (d < 0).all())


def _rule(column: str, s: pl.Series) -> tuple[str, str]:
    """(role, reason) of one column the known schemas do not name."""
    base = _base_name(column)
    if _LABEL_LIKE.match(base):
        return "excluded", (f"label-like: the name '{_SUFFIX.sub('', column)}' says it holds an answer; beside "
                            "the chosen label it would leak it")
    if _IDENTIFIER.match(base):
        return "identifier", f"named like a row or flow id ('{column}'): a model would learn rows, not traffic"
    if _TIME.match(base):
        return "time", f"named like a time stamp ('{column}')"
    if s.dtype.is_temporal():
        return "time", "a date/time column"
    if _is_monotone_index(s):
        return "identifier", "a monotone integer index: a row counter, not a measurement"
    if s.dtype == pl.Utf8 and s.len() >= MIN_ROWS_FOR_DATA_RULES and s.n_unique() == s.len():
        return "identifier", "text unique to every row"
    if s.n_unique() <= 1:
        return "excluded", "constant: one value on every row, no information"
    return "feature", _kind(s)


def _kind(s: pl.Series) -> str:
    return "numeric" if s.dtype.is_numeric() else "categorical (one-hot, with an unseen slot)"


def column_roles(df: pl.DataFrame, *, feature_columns: list[str] | None = None,
                 drop_columns: list[str] | None = None) -> list[ColumnRole]:
    """The role of every column of a canonical table, in column order.

    `feature_columns`: only these may be features (the rest of the candidates are excluded);
    `drop_columns`: never features. A column the user names that is missing is a `ConfigError`,
    and so is naming as a feature a column whose role forbids it (a label, an identifier).
    """
    _check_named(df, feature_columns, "--feature-columns")
    _check_named(df, drop_columns, "--drop-columns")
    known = _known_features()
    dropped = set(drop_columns or ())
    wanted = None if feature_columns is None else set(feature_columns)
    roles = []
    for c in df.columns:
        if c == LABEL:
            role = ColumnRole(c, "label", "the chosen label column")
        elif c in _ENTITY:
            role = ColumnRole(c, "entity", _ENTITY[c])
        elif c == "timestamp":
            role = ColumnRole(c, "time", "orders each entity's records")
        elif c == "flow_id":
            role = ColumnRole(c, "identifier", "the flow id")
        elif c in METADATA_COLUMNS:
            role = ColumnRole(c, "metadata", _METADATA[c])
        elif c in known:
            role = ColumnRole(c, "feature", _kind(df.get_column(c)) + " (a known flow or event feature)")
        else:
            role = ColumnRole(c, *_rule(c, df.get_column(c)))
        if role.role == "feature" and c in dropped:
            role = ColumnRole(c, "excluded", "dropped by the user (--drop-columns)")
        elif role.role == "feature" and wanted is not None and c not in wanted:
            role = ColumnRole(c, "excluded", "not among the user's --feature-columns")
        elif wanted is not None and c in wanted and role.role != "feature" and c not in METADATA_COLUMNS:
            raise ConfigError(f"--feature-columns names {c!r}, which cannot be a feature: it is {role.role} "
                              f"({role.reason})")
        roles.append(role)
    return roles


def feature_names(roles: list[ColumnRole]) -> list[str]:
    return [r.column for r in roles if r.role == "feature"]


def roles_table(roles: list[ColumnRole]) -> list[dict]:
    """JSON-ready list, as saved with a model and printed by `inspect --json`."""
    return [r.to_dict() for r in roles]


def _check_named(df: pl.DataFrame, names: list[str] | None, option: str) -> None:
    if names is None:
        return
    if not names:
        raise ConfigError(f"{option} names no column")
    missing = [n for n in names if n not in df.columns]
    if missing:
        shown = ", ".join(repr(c) for c in df.columns[:10]) + (", ..." if df.width > 10 else "")
        raise ConfigError(f"{option}: no column {', '.join(repr(m) for m in missing)} (columns: {shown})")


def select_columns(df: pl.DataFrame, *, feature_columns: list[str] | None = None,
                   drop_columns: list[str] | None = None) -> pl.DataFrame:
    """The table with the user's choice applied: dropped columns and features outside
    `feature_columns` removed (label, time, entity and metadata columns kept)."""
    if feature_columns is None and drop_columns is None:
        return df
    roles = column_roles(df, feature_columns=feature_columns, drop_columns=drop_columns)
    remove = [r.column for r in roles if r.role == "excluded" and r.reason.startswith(("dropped", "not among"))]
    return df.drop(remove)
