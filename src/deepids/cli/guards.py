"""What `train`, `evaluate` and `inspect` do so that a result can be trusted on unseen data:
the user's column choice, the leakage guard, training-row fingerprints, and the false alarms
and detection rate to expect at the threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deepids.cli.render import info

FeatureColumns = Annotated[Optional[str], typer.Option(
    help="Comma-separated columns to use as features (default: every column whose role is feature; "
         "`deepids inspect` shows the roles).")]
DropColumns = Annotated[Optional[str], typer.Option(
    help="Comma-separated columns never to use as features.")]
StrictLeakage = Annotated[bool, typer.Option(
    "--strict-leakage", help="Refuse to train when a single feature gives the label away (default: warn).")]
StageOne = Annotated[Optional[str], typer.Option(
    help="two-stage: hybrid (default: --detector, or a strict distance to the nearest benign training record: "
         "flags more of the attack families training never showed) or supervised (--detector alone).")]
Novelty = Annotated[Optional[str], typer.Option(
    help="two-stage: when a flagged record is unknown-anomaly: embedding (default: far from every training attack "
         "in the classifier's embedding) or confidence (softmax below min_confidence).")]
FalseAlarms = Annotated[Optional[float], typer.Option(
    help="Set the threshold for at most this many false alarms per 10,000 benign flows, measured on "
         "held-out training records (needs labelled training data; replaces --threshold).")]


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [c.strip() for c in text.split(",") if c.strip()]


def choose_columns(table, feature_columns: str | None, drop_columns: str | None):
    """The table with the user's column choice applied (see `deepids.io.roles`)."""
    from deepids.io.roles import select_columns

    return select_columns(table, feature_columns=_names(feature_columns), drop_columns=_names(drop_columns))


def guard_leakage(table, strict: bool, columns: list[str] | None = None) -> None:
    """Before training: warn about (or, strict, refuse) features that give the label away
    (`columns`: the features to look at; default those whose role is feature)."""
    from deepids.features.leakage import check_leakage

    check_leakage(table, columns, strict=strict, warn=lambda text: info(f"warning: {text}"))


def guard_streamed(data, layout, label_column, chunk_rows: int, columns: tuple, seed: int) -> list[str] | None:
    """Before training from files read in chunks (--stream, --engine ray), in one pass over them:
    the user's column choice, decided on the first chunk as `inspect` decides roles, and the
    leakage guard on a uniform sample of every record, benign and attack (`columns`:
    --feature-columns, --drop-columns, --strict-leakage). Returns the feature columns to train
    on, or None for the roles' default."""
    from deepids.features.leakage import stream_sample
    from deepids.io import iter_flow_batches
    from deepids.io.roles import column_roles, feature_names

    feature_columns, drop_columns, strict = columns
    first, sample = stream_sample(iter_flow_batches(data, layout=layout, label_column=label_column,
                                                    batch_size=chunk_rows), seed=seed)
    if first is None:
        return None               # no record: training says so
    chosen = None
    if feature_columns is not None or drop_columns is not None:
        chosen = feature_names(column_roles(first, feature_columns=_names(feature_columns),
                                            drop_columns=_names(drop_columns)))
    guard_leakage(sample, strict, chosen)
    return chosen


def after_training(detector, table, false_alarms: float | None) -> dict | None:
    """Move the threshold to a false-alarm target if asked; the expected rates at the threshold."""
    from deepids.evaluation.operating import calibrate_false_alarms, operating_point

    if false_alarms is not None:
        calibrate_false_alarms(detector, table, false_alarms)
    point = operating_point(detector, table)
    if point is not None:
        detector.training_summary_["expected_at_threshold"] = point
    return point


def report_expected(point: dict | None) -> None:
    from deepids.evaluation.operating import describe

    info(describe(point))


def save_training_rows(out_dir: Path, table) -> None:
    """A fingerprint of the training rows beside the model, for `evaluate` to count repeats."""
    from deepids.features.leakage import save_fingerprints
    from deepids.features.preprocess import feature_columns

    save_fingerprints(out_dir, table, feature_columns(table))


def training_duplicates(model_dir: Path, data, layout, label_column) -> dict | None:
    """How many evaluated records repeat a training row (features equal), if the model kept a fingerprint."""
    from deepids.features.leakage import count_seen, load_fingerprints
    from deepids.io import iter_flow_batches

    saved = load_fingerprints(model_dir)
    if saved is None:
        return None
    hashes, columns = saved
    seen = total = 0
    for chunk, _ in iter_flow_batches(data, layout=layout, label_column=label_column):
        seen += count_seen(hashes, chunk, columns)
        total += chunk.height
    return {"records": total, "duplicates_of_training_rows": seen}


def roles_of_files(paths, layout, label_column, rows: int = 100_000) -> list[dict]:
    """Column roles decided on the first `rows` records of the first file (what training would decide)."""
    from deepids.io import iter_flow_batches
    from deepids.io.roles import column_roles, roles_table

    for chunk, _ in iter_flow_batches(paths, layout=layout, label_column=label_column, batch_size=rows):
        return roles_table(column_roles(chunk))
    return []
