"""`deepids train`: fit a model on flow files or event logs and save it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deepids.cli.options import (DataFiles, LabelColumn, Layout, Objective, Quiet, ScoreMode, Target,
                                 ThresholdMethod, is_logs)
from deepids.cli.guards import (DropColumns, FalseAlarms, FeatureColumns, StrictLeakage, after_training,
                                choose_columns, guard_leakage, report_expected, save_training_rows)
from deepids.cli.render import info, report_read, said
from deepids.errors import InputError


def train(
    data: DataFiles,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory to save the model in.")],
    model: Annotated[str, typer.Option(help="Model to train: lstm-ae, dense-ae, dnn, cnn, ... (see the README).")] = "lstm-ae",
    sequence_length: Annotated[int, typer.Option(help="Records per window (per entity).")] = 10,
    epochs: Annotated[Optional[int], typer.Option(help="Maximum training epochs (default: the model's own, "
                                                  "20 for the autoencoders).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Windows per training batch (default: the model's own, "
                                                      "64 for the autoencoders).")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Adam learning rate (default: the model's own; the "
                                                           "autoencoders use 3e-3, measured better than Keras' 1e-3).")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Early-stopping patience in epochs (default: the model's "
                                                    "own, 3 for the autoencoders).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    entity: Annotated[str, typer.Option(help="Column that groups records into windows ('none' for file order).")] = "src_ip",
    score_mode: Annotated[ScoreMode, typer.Option(help="Score a record by its own step (last) or the whole window.")] = ScoreMode.last,
    objective: Annotated[Optional[Objective], typer.Option(help="lstm-ae: train on every step of a window (window, "
                                                           "the published training) or on its newest step only (last); "
                                                           "default: what --score-mode scores.")] = None,
    threshold: Annotated[ThresholdMethod, typer.Option(help="How to choose the alert threshold.")] = ThresholdMethod.percentile,
    percentile: Annotated[float, typer.Option(help="Percentile of benign validation scores (threshold=percentile).")] = 99.0,
    fpr: Annotated[float, typer.Option(help="Target false-positive rate (threshold=fpr).")] = 0.01,
    threshold_value: Annotated[Optional[float], typer.Option(help="Threshold value (threshold=fixed).")] = None,
    device: Annotated[str, typer.Option(help="auto (cuda when present), cpu or cuda.")] = "auto",
    target: Annotated[Target, typer.Option(help="Classifiers: learn benign/attack (binary) or attack families.")] = Target.binary,
    layout: Layout = None,
    label_column: LabelColumn = None,
    quiet: Quiet = False,
    score_method: Annotated[Optional[str], typer.Option(help="gan: latent-search (default), reconstruction "
                                                        "(about 20x faster to score) or discriminator.")] = None,
    stream: Annotated[bool, typer.Option("--stream", help="lstm-ae, dense-ae: read the flow files in chunks every "
                                         "epoch instead of holding them (files larger than memory).")] = False,
    chunk_rows: Annotated[int, typer.Option(help="Records per chunk with --stream.", min=1)] = 100_000,
    feature_columns: FeatureColumns = None,
    drop_columns: DropColumns = None,
    strict_leakage: StrictLeakage = False,
    false_alarms: FalseAlarms = None,
) -> None:
    """Train a model on flow files or Windows event logs (.evtx, JSON Lines; files or folders) and save it.

    Detectors (lstm-ae, dense-ae, ...) learn from benign records: labelled attack rows are
    left out and counted. Classifiers (dnn, cnn, ...) need labelled benign and attack records.
    """
    from deepids.io import read_flows
    from deepids.models import MODELS

    if model not in MODELS:
        raise InputError(f"unknown model {model!r}; available: {', '.join(MODELS)}")
    if stream:
        if feature_columns or drop_columns or false_alarms is not None:
            raise InputError("--feature-columns, --drop-columns and --false-alarms need the table in memory; "
                             "train without --stream")
        _train_streamed(MODELS[model], model, data, out_dir, chunk_rows, layout, label_column, dict(
            sequence_length=sequence_length, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
            patience=patience, seed=seed, entity=None if entity.lower() == "none" else entity,
            score_mode=score_mode.value, objective=objective and objective.value, threshold_method=threshold.value,
            threshold_percentile=percentile, threshold_fpr=fpr, threshold_value=threshold_value, device=device,
            verbose=not quiet))
        return
    if is_logs(data):          # Windows event logs (.evtx, JSON Lines): per-event features
        from deepids.hunting.logs import read_log_features

        _, table, report = read_log_features(data, progress=not quiet)
        report_read(report)
    else:
        table, report = read_flows(data, layout=layout, label_column=label_column)
        report_read(report)
    table = choose_columns(table, feature_columns, drop_columns)
    guard_leakage(table, strict_leakage)          # before any training: a feature that gives the label away
    cls = MODELS[model]
    options = dict(
        sequence_length=sequence_length, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        patience=patience, seed=seed, entity=None if entity.lower() == "none" else entity,
        score_mode=score_mode.value, objective=objective and objective.value, threshold_method=threshold.value,
        threshold_percentile=percentile,
        threshold_fpr=fpr, threshold_value=threshold_value, device=device, verbose=not quiet, target=target.value)
    if score_method:
        options["score_method"] = score_method
    for name in ("epochs", "batch_size", "learning_rate", "patience"):
        if options[name] is None:           # left unset: the model's own default
            del options[name]
    accepted = set(cls._param_names())
    detector = cls(**{k: v for k, v in options.items() if k in accepted})
    detector.fit(table)
    point = after_training(detector, table, false_alarms)
    _save_trained(detector, model, data, out_dir, report.to_dict())
    save_training_rows(out_dir, table)
    report_expected(point)


def _save_trained(detector, model: str, data: list[Path], out_dir: Path, read: dict) -> None:
    """Say what training left out and reached, record the inputs in the summary, and save."""
    summary = detector.training_summary_
    if summary.get("attack_records_left_out"):
        info(f"left out {summary['attack_records_left_out']:,} attack records; trained on "
             f"{summary['benign_records']:,} benign records")
    summary["data"] = [str(p) for p in data]
    summary["read"] = read
    detector.save(out_dir)
    h = summary.get("history")
    if h and h.get("best_val_loss") is not None:
        info(f"trained {model}: {len(h['train_loss'])} epochs, best validation loss {h['best_val_loss']:.5f} "
             f"(epoch {h['best_epoch']}), {h['seconds']:.1f}s")
    t = detector.threshold_
    info(f"threshold {t.value:.6g}: {t.note}")
    said(f"saved {out_dir}")


def _train_streamed(cls, model: str, data: list[Path], out_dir: Path, chunk_rows: int, layout, label_column,
                    options: dict) -> None:
    if not hasattr(cls, "fit_files"):
        raise InputError(f"--stream trains the autoencoders (lstm-ae, dense-ae), not {model}")
    if is_logs(data):
        raise InputError("--stream reads flow files (CSV, CSV.gz, Parquet), not Windows event logs")
    accepted = set(cls._param_names())
    detector = cls(**{k: v for k, v in options.items() if k in accepted and v is not None})
    detector.fit_files(data, layout=layout, label_column=label_column, chunk_rows=chunk_rows)
    summary = detector.training_summary_
    read = summary.pop("read") or {}
    report_read(read)
    info(f"streamed in chunks of {chunk_rows:,}: {summary['train_windows']:,} training windows, "
         f"{summary['validation_windows']:,} for validation; features fitted on "
         f"{summary['streamed']['feature_sample_rows']:,} sampled benign records")
    _save_trained(detector, model, data, out_dir, read)
