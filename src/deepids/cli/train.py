"""`deepids train`: fit a model on flow files or event logs and save it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deepids.cli.configure import build_model, given_options, was_given
from deepids.cli.guards import (DropColumns, FalseAlarms, FeatureColumns, StrictLeakage, after_training,
                                choose_columns, guard_leakage, report_expected, save_training_rows)
from deepids.cli.options import (Address, DataFiles, Engine, EngineOption, LabelColumn, Layout, Objective, Quiet,
                                 ScoreMode, Target, ThresholdMethod, is_logs)
from deepids.cli.progress import epoch_bar
from deepids.cli.render import info, report_read, said
from deepids.errors import ConfigError, InputError


def train(
    ctx: typer.Context,
    data: DataFiles,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory to save the model in.")],
    model: Annotated[str, typer.Option(help="Model to train: lstm-ae, dense-ae, dnn, cnn, two-stage, ... "
                                            "(`deepids models` lists them with what they take).")] = "lstm-ae",
    sequence_length: Annotated[Optional[int], typer.Option(help="Records per window (per entity).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Maximum training epochs.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Windows (or records) per training batch.")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Adam learning rate (the autoencoders use 3e-3, "
                                                           "measured better than Keras' 1e-3).")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Early-stopping patience in epochs.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    entity: Annotated[Optional[str], typer.Option(help="Column that groups records into windows ('none' for file "
                                                  "order).")] = None,
    score_mode: Annotated[Optional[ScoreMode], typer.Option(help="Score a record by its own step (last) or the "
                                                            "whole window.")] = None,
    objective: Annotated[Optional[Objective], typer.Option(help="lstm-ae: train on every step of a window (window, "
                                                           "the published training) or on its newest step only (last); "
                                                           "default: what --score-mode scores.")] = None,
    threshold: Annotated[Optional[ThresholdMethod], typer.Option(help="How to choose the alert threshold.")] = None,
    percentile: Annotated[Optional[float], typer.Option(help="Percentile of benign validation scores "
                                                        "(--threshold percentile).")] = None,
    fpr: Annotated[Optional[float], typer.Option(help="Target false-positive rate (--threshold fpr).")] = None,
    threshold_value: Annotated[Optional[float], typer.Option(help="Threshold value (--threshold fixed).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto (cuda when present), cpu or cuda.")] = None,
    target: Annotated[Optional[Target], typer.Option(help="Classifiers: learn benign/attack (binary) or attack "
                                                     "families.")] = None,
    score_method: Annotated[Optional[str], typer.Option(help="gan: reconstruction (default), latent-search "
                                                        "(AnoGAN, about 20x slower to score) or discriminator.")] = None,
    members: Annotated[Optional[int], typer.Option(help="lstm-ae-ensemble: how many autoencoders.")] = None,
    detector: Annotated[Optional[str], typer.Option(help="two-stage: stage one, the model that flags records "
                                                    "(a detector such as lstm-ae, dense-ae, or a binary "
                                                    "classifier such as dnn, random-forest).")] = None,
    classifier: Annotated[Optional[str], typer.Option(help="two-stage: stage two, the classifier that names the "
                                                      "attack family of flagged records (dnn, cnn, "
                                                      "random-forest).")] = None,
    layout: Layout = None,
    label_column: LabelColumn = None,
    quiet: Quiet = False,
    stream: Annotated[bool, typer.Option("--stream", help="lstm-ae, dense-ae: read the flow files in chunks every "
                                         "epoch instead of holding them (files larger than memory).")] = False,
    chunk_rows: Annotated[int, typer.Option(help="Records per chunk with --stream or --engine ray.", min=1)] = 100_000,
    engine: EngineOption = Engine.local,
    address: Address = None,
    num_workers: Annotated[int, typer.Option(help="--engine ray: data-parallel training workers (DDP).", min=1)] = 2,
    storage: Annotated[Optional[str], typer.Option(help="--engine ray: where Ray Train keeps its checkpoint, on "
                                                   "storage every node sees (a shared path or s3://...); default: "
                                                   "a temporary folder, enough on one machine.")] = None,
    entity_context: Annotated[bool, typer.Option("--entity-context", help="Add what each source host has been doing "
                                                 "(records, destinations, ports in the last --context-seconds and "
                                                 "last --context-flows records, inter-arrival, failed share) as "
                                                 "features (flow files read at once).")] = False,
    context_seconds: Annotated[float, typer.Option(help="--entity-context: time window in seconds.")] = 60.0,
    context_flows: Annotated[int, typer.Option(help="--entity-context: the last records per host.", min=1)] = 20,
    checkpoint_dir: Annotated[Optional[Path], typer.Option("--checkpoint-dir", help="Write a training checkpoint "
                                                           "here after every epoch (torch models).")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue an interrupted training from its "
                                                   "checkpoint directory (give the same model, options and data).")] = None,
    feature_columns: FeatureColumns = None,
    drop_columns: DropColumns = None,
    strict_leakage: StrictLeakage = False,
    false_alarms: FalseAlarms = None,
) -> None:
    """Train a model on flow files or Windows event logs (.evtx, JSON Lines; files or folders) and save it.

    Detectors (lstm-ae, dense-ae, ...) learn from benign records: labelled attack rows are
    left out and counted. Classifiers (dnn, cnn, ...) need labelled benign and attack records.
    An option the model does not take is an error; an option left out takes the model's own
    default (`deepids models` lists them). The two-stage model passes each option to the
    stages that take it.
    """
    from deepids.io import read_flows

    estimator = build_model(model, given_options(ctx), verbose=not quiet)    # a mistake fails before any reading
    if entity_context:
        if stream or engine is Engine.ray or is_logs(data):
            raise ConfigError("--entity-context applies to flow files read at once (not --stream, --engine ray "
                              "or event logs)")
        from deepids.models.context import ContextDetector

        estimator = ContextDetector(detector=model, detector_params=estimator.get_params(),
                                    window_seconds=context_seconds, last_flows=context_flows)
    if engine is not Engine.ray:
        for name in ("address", "num_workers", "storage"):
            if was_given(ctx, name):
                raise ConfigError(f"--{name.replace('_', '-')} applies with --engine ray")
    fit_options = _fit_options(checkpoint_dir, resume)
    if engine is Engine.ray and fit_options["checkpoint_dir"] is not None:
        raise ConfigError("--checkpoint-dir and --resume apply to local training, not --engine ray")
    if stream or engine is Engine.ray:
        if feature_columns or drop_columns or false_alarms is not None:
            raise ConfigError("--feature-columns, --drop-columns and --false-alarms need the table in memory; "
                              "train without --stream or --engine ray")
        ray = ({"num_workers": num_workers, "address": address, "storage_path": storage} if engine is Engine.ray
               else None)
        _train_streamed(estimator, model, data, out_dir, chunk_rows, layout, label_column, ray,
                        fit_options, quiet)
        return
    if was_given(ctx, "chunk_rows"):
        raise ConfigError("--chunk-rows applies with --stream or --engine ray")
    if is_logs(data):          # Windows event logs (.evtx, JSON Lines): per-event features with process context
        from deepids.hunting.logs import fit_log_model, read_log_events

        if feature_columns or drop_columns or false_alarms is not None:
            raise ConfigError("--feature-columns, --drop-columns and --false-alarms apply to flow files")
        log_events, report = read_log_events(data, progress=not quiet)
        report_read(report)
        with epoch_bar(not quiet) as progress:
            fit_log_model(estimator, log_events, progress=progress, **fit_options)
    else:
        table, report = read_flows(data, layout=layout, label_column=label_column)
        report_read(report)
        table = choose_columns(table, feature_columns, drop_columns)
        guard_leakage(table, strict_leakage)      # before any training: a feature that gives the label away
        with epoch_bar(not quiet) as progress:
            estimator.fit(table, progress=progress, **fit_options)
        point = after_training(estimator, table, false_alarms)
        _save_trained(estimator, model, data, out_dir, report.to_dict())
        save_training_rows(out_dir, table)
        report_expected(point)
        return
    _save_trained(estimator, model, data, out_dir, report.to_dict())


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


def _train_streamed(detector, model: str, data: list[Path], out_dir: Path, chunk_rows: int, layout, label_column,
                    ray: dict | None, fit_options: dict, quiet: bool) -> None:
    how = "--engine ray" if ray else "--stream"
    if not hasattr(detector, "fit_files"):
        raise InputError(f"{how} trains the autoencoders (lstm-ae, dense-ae), not {model}")
    if is_logs(data):
        raise InputError(f"{how} reads flow files (CSV, CSV.gz, Parquet), not Windows event logs")
    if ray:
        from deepids.distributed.ray_train import train_ray

        detector = train_ray(detector, data, None, layout=layout, label_column=label_column, chunk_rows=chunk_rows,
                             **ray)
        info(f"trained on {ray['num_workers']} Ray workers (DDP, "
             f"{detector.training_summary_['distributed']['backend']})")
    else:
        with epoch_bar(not quiet) as progress:
            detector.fit_files(data, layout=layout, label_column=label_column, chunk_rows=chunk_rows,
                               progress=progress, **fit_options)
    summary = detector.training_summary_
    read = summary.pop("read") or {}
    report_read(read)
    info(f"streamed in chunks of {chunk_rows:,}: {summary['train_windows']:,} training windows, "
         f"{summary['validation_windows']:,} for validation; features fitted on "
         f"{summary['streamed']['feature_sample_rows']:,} sampled benign records")
    _save_trained(detector, model, data, out_dir, read)


def _fit_options(checkpoint_dir: Path | None, resume: Path | None) -> dict:
    """`fit`'s checkpoint arguments from --checkpoint-dir and --resume."""
    if resume is None:
        return {"checkpoint_dir": checkpoint_dir, "resume": False}
    if checkpoint_dir is not None and checkpoint_dir.resolve() != resume.resolve():
        raise InputError("--resume continues in its own checkpoint directory; drop --checkpoint-dir or give the same one")
    if not resume.is_dir():
        raise InputError(f"--resume {resume}: no such checkpoint directory")
    return {"checkpoint_dir": resume, "resume": True}
