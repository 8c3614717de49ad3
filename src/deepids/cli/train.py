"""`deepids train`: fit a model on flow files or event logs and save it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deepids.cli.configure import build_model, flag, given_options, was_given
from deepids.cli.guards import (DropColumns, FalseAlarms, FeatureColumns, Novelty, StageOne, StrictLeakage,
                                after_training, choose_columns, guard_leakage, guard_streamed, report_expected,
                                save_training_rows)
from deepids.cli.options import (Address, BatchSize, Classifier, DataFiles, Detector, Device, Engine, EngineOption,
                                 Entity, Epochs, Fpr, LabelColumn, Layout, LearningRate, Members, ObjectiveOption,
                                 Patience, Percentile, Quiet, ScoreMethod, ScoreModeOption, Seed, SequenceLength,
                                 TargetOption, ThresholdOption, ThresholdValue, is_logs)
from deepids.cli.progress import epoch_bar, record_bar
from deepids.cli.render import info, report_read, said
from deepids.errors import ConfigError, InputError

#: the model `deepids train` fits on event logs when --model is not given (README, "Threat hunting")
LOG_MODEL = "event-rarity"


def train(
    ctx: typer.Context,
    data: DataFiles,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory to save the model in.")],
    model: Annotated[str, typer.Option(help="Model to train: lstm-ae, dense-ae, dnn, cnn, two-stage, gan, "
                                            "event-rarity, ... (`deepids models` lists them with what they take); "
                                            "default: lstm-ae on flows, event-rarity on event logs.")] = "lstm-ae",
    sequence_length: SequenceLength = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    learning_rate: LearningRate = None,
    patience: Patience = None,
    seed: Seed = None,
    entity: Entity = None,
    score_mode: ScoreModeOption = None,
    objective: ObjectiveOption = None,
    threshold: ThresholdOption = None,
    percentile: Percentile = None,
    fpr: Fpr = None,
    threshold_value: ThresholdValue = None,
    device: Device = None,
    target: TargetOption = None,
    score_method: ScoreMethod = None,
    members: Members = None,
    detector: Detector = None,
    classifier: Classifier = None,
    stage_one: StageOne = None,
    novelty: Novelty = None,
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
    if is_logs(data) and not was_given(ctx, "model"):
        model = LOG_MODEL
    estimator = build_model(model, given_options(ctx), verbose=not quiet)    # a mistake fails before any reading
    if getattr(estimator, "reads_only_events", False) and not is_logs(data):
        raise InputError(f"{model} reads Windows event logs (.evtx, JSON Lines), not flow files")
    ray = engine is Engine.ray
    _check_applies(ctx, stream, ray, not (stream or ray or is_logs(data)), entity_context)
    fit_options = _fit_options(checkpoint_dir, resume, ray)
    if entity_context:
        estimator = _with_entity_context(estimator, model, context_seconds, context_flows)
    if stream or ray:
        cluster = {"num_workers": num_workers, "address": address, "storage_path": storage} if ray else None
        _train_streamed(estimator, model, data, out_dir, chunk_rows, layout, label_column, cluster,
                        fit_options, quiet, (feature_columns, drop_columns, strict_leakage))
        return
    read, table = _fit_in_memory(estimator, data, layout, label_column, fit_options, quiet,
                                 (feature_columns, drop_columns, strict_leakage))
    point = after_training(estimator, table, false_alarms) if table is not None else None
    _save_trained(estimator, model, data, out_dir, read)
    if table is not None:
        save_training_rows(out_dir, table)
        report_expected(point)


def _with_entity_context(estimator, model: str, context_seconds: float, context_flows: int):
    """The chosen model behind the entity-context step (what each source host has been doing)."""
    from deepids.models.context import ContextDetector

    return ContextDetector(detector=model, detector_params=estimator.get_params(), window_seconds=context_seconds,
                           last_flows=context_flows)


def _fit_in_memory(estimator, data: list[Path], layout, label_column, fit_options: dict, quiet: bool,
                   columns: tuple) -> tuple[dict, object]:
    """Read the inputs whole and fit: (the read report, the flow table trained on, or None for event logs).

    Event logs are read twice, a chunk at a time (the context, then the features), and never held;
    flows get the chosen columns and the leakage guard
    (`columns`: --feature-columns, --drop-columns, --strict-leakage) before any training.
    """
    if is_logs(data):          # Windows event logs (.evtx, JSON Lines): per-event features with process context
        from deepids.hunting.logs import fit_log_files, log_context_from_files

        with record_bar(not quiet, "reading logs", unit="files") as progress:
            context, report = log_context_from_files(data, progress=progress)    # a chunk at a time, read twice
        report_read(report)
        with epoch_bar(not quiet) as progress:
            fit_log_files(estimator, context, data, progress=progress, **fit_options)
        return report.to_dict(), None
    from deepids.io import read_flows

    feature_columns, drop_columns, strict_leakage = columns
    table, report = read_flows(data, layout=layout, label_column=label_column)
    report_read(report)
    table = choose_columns(table, feature_columns, drop_columns)
    guard_leakage(table, strict_leakage)      # before any training: a feature that gives the label away
    with epoch_bar(not quiet) as progress:
        estimator.fit(table, progress=progress, **fit_options)
    return report.to_dict(), table


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
                    ray: dict | None, fit_options: dict, quiet: bool, columns: tuple) -> None:
    how = "--engine ray" if ray else "--stream"
    if not hasattr(detector, "fit_files"):
        raise InputError(f"{how} trains the autoencoders (lstm-ae, dense-ae), not {model}")
    if is_logs(data):
        raise InputError(f"{how} reads flow files (CSV, CSV.gz, Parquet), not Windows event logs")
    chosen = guard_streamed(data, layout, label_column, chunk_rows, columns, detector.seed)
    if ray:
        from deepids.distributed.ray_train import train_ray

        detector = train_ray(detector, data, None, layout=layout, label_column=label_column, chunk_rows=chunk_rows,
                             columns=chosen, **ray)
        info(f"trained on {ray['num_workers']} Ray workers (DDP, "
             f"{detector.training_summary_['distributed']['backend']})")
    else:
        with epoch_bar(not quiet) as progress:
            detector.fit_files(data, layout=layout, label_column=label_column, chunk_rows=chunk_rows,
                               progress=progress, columns=chosen, **fit_options)
    summary = detector.training_summary_
    read = summary.pop("read") or {}
    report_read(read)
    info(f"streamed in chunks of {chunk_rows:,}: {summary['train_windows']:,} training windows, "
         f"{summary['validation_windows']:,} for validation; features fitted on "
         f"{summary['streamed']['feature_sample_rows']:,} sampled benign records")
    _save_trained(detector, model, data, out_dir, read)


def _check_applies(ctx, stream: bool, ray: bool, flows_at_once: bool, entity_context: bool) -> None:
    """An option given where it means nothing is an error that names it."""
    in_memory = "flow files read at once (not --stream, --engine ray or event logs)"
    flow_files, flows = "flow files (not event logs)", flows_at_once or stream or ray
    needs = {"address": ("--engine ray", ray), "num_workers": ("--engine ray", ray), "storage": ("--engine ray", ray),
             "chunk_rows": ("--stream or --engine ray", stream or ray),
             "entity_context": (in_memory, flows_at_once), "feature_columns": (flow_files, flows),
             "drop_columns": (flow_files, flows), "strict_leakage": (flow_files, flows),
             "false_alarms": (in_memory, flows_at_once), "context_seconds": ("--entity-context", entity_context),
             "context_flows": ("--entity-context", entity_context)}
    for option, (what, holds) in needs.items():
        if not holds and was_given(ctx, option):
            raise ConfigError(f"{flag(option)} applies with {what}")


def _fit_options(checkpoint_dir: Path | None, resume: Path | None, ray: bool) -> dict:
    """`fit`'s checkpoint arguments from --checkpoint-dir and --resume (local training only)."""
    if ray and (checkpoint_dir is not None or resume is not None):
        raise ConfigError("--checkpoint-dir and --resume apply to local training, not --engine ray")
    if resume is None:
        return {"checkpoint_dir": checkpoint_dir, "resume": False}
    if checkpoint_dir is not None and checkpoint_dir.resolve() != resume.resolve():
        raise InputError("--resume continues in its own checkpoint directory; drop --checkpoint-dir or give the same one")
    if not resume.is_dir():
        raise InputError(f"--resume {resume}: no such checkpoint directory")
    return {"checkpoint_dir": resume, "resume": True}
