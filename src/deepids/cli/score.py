"""`deepids score`, `deepids evaluate` and `deepids flows`: records in, scores, metrics or flows out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from deepids.cli.options import (Address, DataFiles, Engine, EngineOption, LabelColumn, Layout, ModelDir, Quiet,
                                 is_logs)
from deepids.cli.guards import training_duplicates
from deepids.cli.progress import record_bar
from deepids.cli.render import info, print_metrics, report_read, said, score_line, write_json
from deepids.errors import ConfigError


def evaluate(
    model: ModelDir,
    data: DataFiles,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the metrics as JSON here ('-' for stdout).")] = None,
    plots: Annotated[Optional[Path], typer.Option(help="Write ROC/PR curves and a score histogram here.")] = None,
    layout: Layout = None,
    label_column: LabelColumn = None,
    quiet: Quiet = False,
) -> None:
    """Score labelled flow files and print detection metrics (per record)."""
    from deepids.evaluation import detection_metrics, family_metrics, plot_detection
    from deepids.evaluation.metrics import names_families
    from deepids.models import load_model
    from deepids.scoring import collect_scores

    detector = load_model(model)
    if is_logs(data):
        from deepids.hunting.commands import evaluate_logs

        with record_bar(not quiet) as progress:
            metrics = evaluate_logs(detector, data, progress=progress, info=info)
        metrics["model"] = str(model)
        print_metrics(metrics, title="detection metrics (per event)")
        if json_out:
            write_json(metrics, json_out)
        return
    with record_bar(not quiet) as progress:
        collected = collect_scores(detector, data, layout=layout, label_column=label_column, progress=progress,
                                   require_labels=True)
    report_read(collected.read, "scored")
    metrics = detection_metrics(collected.labels, collected.score, detector.threshold_.value, collected.loss)
    if names_families(collected.predicted):     # models that name attacks: how well they name them
        metrics.update(family_metrics(collected.labels, collected.predicted))
    metrics["model"] = str(model)
    metrics["data"] = [str(p) for p in data]
    metrics["records_rejected"] = collected.read.n_rejected
    metrics["threshold_method"] = detector.threshold_.method
    seen = training_duplicates(model, data, layout, label_column)
    if seen is not None:
        metrics["duplicates_of_training_rows"] = seen["duplicates_of_training_rows"]
    print_metrics(metrics)
    if seen is not None and seen["duplicates_of_training_rows"]:
        info(f"{seen['duplicates_of_training_rows']:,} of the {seen['records']:,} evaluated records repeat a "
             f"training row (the same feature values): the model has seen them, so these figures flatter it")
    if plots:
        for path in plot_detection(collected.labels, collected.score, detector.threshold_.value, plots,
                                   title=f"{detector.model_name} on {Path(data[0]).name}"):
            info(f"wrote {path}")
    if json_out:
        write_json(metrics, json_out)


def score(
    model: ModelDir,
    data: DataFiles,
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Output file: .csv, .parquet or .jsonl "
                                           "(--engine ray: a new folder of Parquet files).")],
    top_k: Annotated[int, typer.Option(help="Top contributing features to list per record.")] = 3,
    batch_size: Annotated[Optional[int], typer.Option(help="Records per chunk (bounds memory; default: 100,000 flows or 10,000 events).")] = None,
    layout: Layout = None,
    label_column: LabelColumn = None,
    quiet: Quiet = False,
    engine: EngineOption = Engine.local,
    address: Address = None,
    actors: Annotated[Optional[int], typer.Option(help="--engine ray: scoring actors (default: one per cluster CPU).",
                                                  min=1)] = None,
    partitions: Annotated[Optional[int], typer.Option(help="--engine ray, sequence models: entity partitions "
                                                      "(default: 4 per actor).", min=1)] = None,
) -> None:
    """Score every record of flow files, packet captures or event logs into CSV, Parquet or JSON Lines."""
    from deepids.kinds import kind_of_model
    from deepids.models import load_model
    from deepids.scoring import output_format, score_files

    if engine is Engine.ray:
        _score_on_ray(model, data, out_file, top_k, batch_size, layout, label_column, address, actors, partitions,
                      quiet)
        return
    output_format(out_file)          # a bad file name fails before any work
    detector = load_model(model)
    unit = kind_of_model(detector).noun
    with record_bar(not quiet, unit=unit) as progress:
        summary = score_files(detector, data, out_file, layout=layout, label_column=label_column,
                              batch_size=batch_size, top_k=top_k, progress=progress)
    d = summary.to_dict()
    info(score_line(d, detector.threshold_.value, unit))
    read = d.get("read") or {}
    for note in read.get("notes", ()):        # what a capture held, its damage
        info(note)
    for path, n in (read.get("damaged_files") or {}).items():
        info(f"DAMAGED: {path}: {n:,} records unreadable or lost (counted as rejected)")
    said(f"wrote {out_file}")


def _score_on_ray(model, data, out_dir, top_k, batch_size, layout, label_column, address, actors, partitions,
                  quiet) -> None:
    from deepids.distributed.ray_score import score_files_ray

    if is_logs(data):
        raise ConfigError("--engine ray scores flow files (CSV, CSV.gz, Parquet), not event logs")
    s = score_files_ray(model, data, out_dir, address=address, actors=actors, partitions=partitions,
                        chunk_rows=batch_size, layout=layout, label_column=label_column, top_k=top_k,
                        progress=not quiet)
    info(score_line(s.to_dict(), s.threshold, "records") + f" on {s.actors} Ray actors")
    if not s.counts_add_up:
        info(f"deepids: error: counts do not add up: read {s.records_read:,}, scored {s.records_scored:,} "
             f"(see {Path(s.output) / '_summary.json'})")
        raise typer.Exit(1)
    info(f"read {s.records_read:,} + rejected {s.records_rejected:,}; scored {s.records_scored:,}: every record "
         "accounted for")
    said(f"wrote {out_dir}")


def flows(
    capture: Annotated[Path, typer.Argument(help="Packet capture: pcap or pcapng, optionally gzip-compressed.")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Output file: .parquet or .csv.")],
    flow_timeout: Annotated[float, typer.Option(help="Seconds after a flow's first packet that end it (CICFlowMeter: 120).")] = 120.0,
    activity_timeout: Annotated[float, typer.Option(help="Gap in seconds that separates active and idle periods (CICFlowMeter: 5).")] = 5.0,
    end_on_rst: Annotated[bool, typer.Option("--end-on-rst/--fin-only", help="Whether a TCP RST ends a flow like FIN does.")] = True,
    min_packets: Annotated[int, typer.Option(help="Drop flows with fewer packets (CICFlowMeter: 2).")] = 2,
    cic_names: Annotated[bool, typer.Option(help="Name the metadata as GeneratedLabelledFlows does (Flow ID, Source IP, ...).")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the capture report as JSON here ('-' for stdout).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No speed line.")] = False,
    nfstream: Annotated[bool, typer.Option("--nfstream", help="NFStream's flows and statistics instead (its own timeouts; "
                                                             ".csv only; the [nfstream] extra).")] = False,
) -> None:
    """Extract bidirectional flows with the CICFlowMeter features from a packet capture."""
    from deepids.io.flowmeter import write_capture_flows

    if nfstream:
        _nfstream_flows(capture, out_file, quiet)
        return

    if flow_timeout <= 0 or activity_timeout <= 0 or min_packets < 1:
        raise ConfigError("--flow-timeout and --activity-timeout must be positive, --min-packets at least 1")
    if not str(out_file).lower().endswith((".parquet", ".pq", ".csv")):
        raise ConfigError(f"cannot tell the output format of {out_file}: use .parquet or .csv")
    started = time.perf_counter()
    # flows are written as they end: memory follows the open flows, not the capture's length
    report = write_capture_flows(capture, out_file, cic_names=cic_names, flow_timeout=flow_timeout,
                                 activity_timeout=activity_timeout, end_on_rst=end_on_rst, min_packets=min_packets)
    seconds = time.perf_counter() - started
    info(report.line())
    if not quiet:
        info(f"{report.capture.packets:,} packets in {seconds:.2f}s ({report.capture.packets / max(seconds, 1e-9):,.0f} packets/s)")
    if json_out:
        write_json({**report.to_dict(), "seconds": round(seconds, 3), "out": str(out_file)}, json_out)
    said(f"wrote {report.flows:,} flows to {out_file}")


def _nfstream_flows(capture: Path, out_file: Path, quiet: bool) -> None:
    from deepids.io.connlogs.nfstream import write_capture

    if not str(out_file).lower().endswith(".csv"):
        raise ConfigError(f"--nfstream writes NFStream's CSV: give a .csv output, not {out_file}")
    started = time.perf_counter()
    flows = write_capture(capture, out_file)
    if not quiet:
        info(f"NFStream: {flows:,} flows in {time.perf_counter() - started:.2f}s")
    said(f"wrote {flows:,} flows to {out_file} (nfstream)")
