"""The `deepids` command: a thin shell over the library.

Errors a user can cause print one line on stderr and exit with code 2; never a traceback.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from deepids.errors import DeepidsError, InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Deep-learning intrusion and anomaly detection for network flows.")
out = Console()
err = Console(stderr=True, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        from deepids import __version__

        out.print(f"deepids {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Show the version and exit.")] = False) -> None:
    """Deep-learning intrusion and anomaly detection for network flows."""


class ThresholdMethod(str, Enum):
    percentile = "percentile"
    fpr = "fpr"
    fixed = "fixed"
    best_f1 = "best-f1"


class Target(str, Enum):
    binary = "binary"
    family = "family"


class ScoreMode(str, Enum):
    last = "last"
    window = "window"


class Objective(str, Enum):
    window = "window"
    last = "last"


Layout = Annotated[Optional[str], typer.Option(
    help="Force the input layout: cicids2017, cicids2017-labelled, cse-cic-ids2018, nsl-kdd or generic "
         "(default: detected from the header).")]
LabelColumn = Annotated[Optional[str], typer.Option(help="Label column of a generic CSV/Parquet file.")]
DataFiles = Annotated[list[Path], typer.Option("--data", "-d", help="Flow file (CSV, CSV.gz or Parquet); repeat for more.")]


def _info(message: str) -> None:
    err.print(message, highlight=False)


def _report_read(report, what: str = "read") -> None:
    d = report if isinstance(report, dict) else report.to_dict()
    line = f"{what} {d['records']:,} records ({d['layout']})"
    if d["rejected"]:
        reasons = ", ".join(f"{n:,} {r}" for r, n in d["rejected_reasons"].items())
        line += f"; rejected {d['rejected']:,}: {reasons}"
    _info(line)
    for note in d.get("notes", ()):     # e.g. what a packet capture held, damage
        _info(note)


# --------------------------------------------------------------------------- train
@app.command()
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    score_method: Annotated[Optional[str], typer.Option(help="gan: latent-search (default), reconstruction "
                                                        "(about 20x faster to score) or discriminator.")] = None,
    stream: Annotated[bool, typer.Option("--stream", help="lstm-ae, dense-ae: read the flow files in chunks every "
                                         "epoch instead of holding them (files larger than memory).")] = False,
    chunk_rows: Annotated[int, typer.Option(help="Records per chunk with --stream.", min=1)] = 100_000,
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
        _train_streamed(MODELS[model], model, data, out_dir, chunk_rows, layout, label_column, dict(
            sequence_length=sequence_length, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
            patience=patience, seed=seed, entity=None if entity.lower() == "none" else entity,
            score_mode=score_mode.value, objective=objective and objective.value, threshold_method=threshold.value,
            threshold_percentile=percentile, threshold_fpr=fpr, threshold_value=threshold_value, device=device,
            verbose=not quiet))
        return
    if _is_logs(data):          # Windows event logs (.evtx, JSON Lines): per-event features
        from deepids.hunting.logs import read_log_features

        _, table, report = read_log_features(data, progress=not quiet)
        _report_read(report)
    else:
        table, report = read_flows(data, layout=layout, label_column=label_column)
        _report_read(report)
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
    _save_trained(detector, model, data, out_dir, report.to_dict())


def _save_trained(detector, model: str, data: list[Path], out_dir: Path, read: dict) -> None:
    """Say what training left out and reached, record the inputs in the summary, and save."""
    summary = detector.training_summary_
    if summary.get("attack_records_left_out"):
        _info(f"left out {summary['attack_records_left_out']:,} attack records; trained on "
              f"{summary['benign_records']:,} benign records")
    summary["data"] = [str(p) for p in data]
    summary["read"] = read
    detector.save(out_dir)
    h = summary.get("history")
    if h and h.get("best_val_loss") is not None:
        _info(f"trained {model}: {len(h['train_loss'])} epochs, best validation loss {h['best_val_loss']:.5f} "
              f"(epoch {h['best_epoch']}), {h['seconds']:.1f}s")
    t = detector.threshold_
    _info(f"threshold {t.value:.6g}: {t.note}")
    out.print(f"saved {out_dir}", highlight=False)


def _train_streamed(cls, model: str, data: list[Path], out_dir: Path, chunk_rows: int, layout, label_column,
                    options: dict) -> None:
    if not hasattr(cls, "fit_files"):
        raise InputError(f"--stream trains the autoencoders (lstm-ae, dense-ae), not {model}")
    if _is_logs(data):
        raise InputError("--stream reads flow files (CSV, CSV.gz, Parquet), not Windows event logs")
    accepted = set(cls._param_names())
    detector = cls(**{k: v for k, v in options.items() if k in accepted and v is not None})
    detector.fit_files(data, layout=layout, label_column=label_column, chunk_rows=chunk_rows)
    summary = detector.training_summary_
    read = summary.pop("read") or {}
    _report_read(read)
    _info(f"streamed in chunks of {chunk_rows:,}: {summary['train_windows']:,} training windows, "
          f"{summary['validation_windows']:,} for validation; features fitted on "
          f"{summary['streamed']['feature_sample_rows']:,} sampled benign records")
    _save_trained(detector, model, data, out_dir, read)


# ------------------------------------------------------------------------ evaluate
@app.command()
def evaluate(
    model: Annotated[Path, typer.Option("--model", "-m", help="Saved model directory.")],
    data: DataFiles,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the metrics as JSON here ('-' for stdout).")] = None,
    plots: Annotated[Optional[Path], typer.Option(help="Write ROC/PR curves and a score histogram here.")] = None,
    layout: Layout = None,
    label_column: LabelColumn = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Score labelled flow files and print detection metrics (per record)."""
    from deepids.evaluation import detection_metrics, family_metrics, plot_detection
    from deepids.evaluation.metrics import names_families
    from deepids.models import load_model
    from deepids.scoring import collect_scores

    detector = load_model(model)
    if _is_logs(data):
        from deepids.hunting.commands import evaluate_logs

        metrics = evaluate_logs(detector, data, progress=not quiet, info=_info)
        metrics["model"] = str(model)
        print_metrics(metrics, title="detection metrics (per event)")
        if json_out:
            _write_json(metrics, json_out)
        return
    collected = collect_scores(detector, data, layout=layout, label_column=label_column, progress=not quiet,
                               require_labels=True)
    _report_read(collected.read, "scored")
    metrics = detection_metrics(collected.labels, collected.score, detector.threshold_.value, collected.loss)
    if names_families(collected.predicted):     # models that name attacks: how well they name them
        metrics.update(family_metrics(collected.labels, collected.predicted))
    metrics["model"] = str(model)
    metrics["data"] = [str(p) for p in data]
    metrics["records_rejected"] = collected.read.n_rejected
    metrics["threshold_method"] = detector.threshold_.method
    print_metrics(metrics)
    if plots:
        for path in plot_detection(collected.labels, collected.score, detector.threshold_.value, plots,
                                   title=f"{detector.model_name} on {Path(data[0]).name}"):
            _info(f"wrote {path}")
    if json_out:
        _write_json(metrics, json_out)


def print_metrics(metrics: dict, title: str = "detection metrics (per record)") -> None:
    table = Table(title=title, title_justify="left")
    for col in ("Accuracy", "Loss", "Recall", "Precision", "F-measure", "ROC-AUC", "PR-AUC"):
        table.add_column(col, justify="right")
    fmt = lambda v, pct=True: "n/a" if v is None else (f"{100 * v:.2f} %" if pct else f"{v:.4f}")  # noqa: E731
    table.add_row(fmt(metrics["accuracy"]), fmt(metrics["loss"], False), fmt(metrics["recall"]),
                  fmt(metrics["precision"]), fmt(metrics["f1"]), fmt(metrics["roc_auc"], False),
                  fmt(metrics["pr_auc"], False))
    out.print(table)
    per = Table(title=f"per label (threshold {metrics['threshold']:.4g})", title_justify="left")
    per.add_column("label")
    per.add_column("records", justify="right")
    per.add_column("flagged", justify="right")
    per.add_column("rate", justify="right")
    for name, entry in metrics["per_label"].items():
        rate = entry.get("detection_rate", entry.get("false_positive_rate"))
        kind = "detected" if "detection_rate" in entry else "false alarms"
        per.add_row(name, f"{entry['records']:,}", f"{entry['flagged']:,}", f"{100 * rate:.1f} % {kind}")
    out.print(per)
    if metrics.get("per_family"):
        fam = Table(title=f"attack families (macro-F1 {metrics['macro_f1']:.4f})", title_justify="left")
        for col in ("family", "support", "precision", "recall", "F1"):
            fam.add_column(col, justify="right" if col != "family" else "left")
        for name, m in metrics["per_family"].items():
            fam.add_row(name, f"{m['support']:,}", f"{100 * m['precision']:.1f} %", f"{100 * m['recall']:.1f} %",
                        f"{m['f1']:.3f}")
        out.print(fam)


# --------------------------------------------------------------------------- score
@app.command()
def score(
    model: Annotated[Path, typer.Option("--model", "-m", help="Saved model directory.")],
    data: DataFiles,
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Output file: .csv, .parquet or .jsonl.")],
    top_k: Annotated[int, typer.Option(help="Top contributing features to list per record.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Records per chunk (bounds memory).")] = 100_000,
    layout: Layout = None,
    label_column: LabelColumn = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Score every record of flow files, packet captures or event logs into CSV, Parquet or JSON Lines."""
    from deepids.models import load_model
    from deepids.scoring import output_format, score_files

    output_format(out_file)          # a bad file name fails before any work
    detector = load_model(model)
    if _is_logs(data):
        from deepids.hunting.logs import score_log_files

        d, unit = score_log_files(detector, data, out_file, top_k=top_k, progress=not quiet), "events"
    else:
        d, unit = score_files(detector, data, out_file, layout=layout, label_column=label_column,
                              batch_size=batch_size, top_k=top_k, progress=not quiet).to_dict(), "records"
    line = (f"scored {d['records_scored']:,} {unit}, {d['alerts']:,} alerts "
            f"(threshold {detector.threshold_.value:.4g}), rejected {d['records_rejected']:,}")
    if d["rejected_reasons"]:
        line += " (" + ", ".join(f"{n:,} {r}" for r, n in d["rejected_reasons"].items()) + ")"
    _info(line + f"; {d['records_per_second'] or 0:,.0f} {unit}/s")
    out.print(f"wrote {out_file}", highlight=False)


# ------------------------------------------------------------------------- inspect
@app.command()
def inspect(
    paths: Annotated[list[Path], typer.Argument(help="Flow files or directories.")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON here ('-' for stdout).")] = None,
    layout: Layout = None,
    label_column: LabelColumn = None,
) -> None:
    """Show what deepids reads from flow files: layout, records, rejections, labels, time range, entities."""
    from deepids.io import inspect_flows

    if _is_logs(paths):
        from deepids.io.logs import inspect_logs

        d = inspect_logs(paths).to_dict()
    else:
        d = inspect_flows(paths, layout=layout, label_column=label_column).to_dict()
    if json_out:
        _write_json(d, json_out)
        if str(json_out) == "-":
            return
    table = Table(show_header=False, title=", ".join(str(p) for p in paths), title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("layout", d["layout"])
    table.add_row("records", f"{d['records']:,}")
    table.add_row("rejected", f"{d['rejected']:,}" + "".join(f"\n  {n:,} {r}" for r, n in d["rejected_reasons"].items()))
    table.add_row("exact duplicates", f"{d.get('duplicates', 0):,}")
    if d.get("time_range"):
        table.add_row("time range", " to ".join(d["time_range"]))
    if d.get("entities"):
        table.add_row("entities", ", ".join(f"{n:,} {k}" for k, n in d["entities"].items()))
    for key in ("hosts", "channels", "event_ids"):
        if d.get(key):
            table.add_row(key.replace("_", " "), "\n".join(f"{n:>8,}  {k}" for k, n in d[key].items()))
    labels = d.get("labels") or {}
    if d.get("notes"):
        table.add_row("notes", "\n".join(d["notes"]))
    table.add_row("labels", "\n".join(f"{n:>8,}  {k}" for k, n in sorted(labels.items(), key=lambda kv: -kv[1]))
                  or "none")
    out.print(table)


# ----------------------------------------------------------------------- benchmark
@app.command()
def benchmark(
    data: DataFiles,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for results.md/json, plots, report.html.")],
    test: Annotated[Optional[list[Path]], typer.Option(help="Test on these files instead of a split (cross-dataset).")] = None,
    models: Annotated[Optional[str], typer.Option(help="Comma-separated subset of models (default: all).")] = None,
    quick: Annotated[bool, typer.Option(help="Fewer epochs, members and trees: a smoke test, not a result.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for the split and every model.")] = 0,
    test_fraction: Annotated[float, typer.Option(help="Share of records held out for testing.")] = 0.3,
    sequence_length: Annotated[Optional[int], typer.Option(help="LSTM window length (default: 10 when records carry "
                                                           "src_ip or timestamps, else 1).")] = None,
    layout: Layout = None,
    label_column: LabelColumn = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Train and test every model on the same leakage-free split; write the comparison."""
    from deepids.evaluation.benchmark import run_benchmark

    result = run_benchmark(data, out_dir, test=test, models=models.split(",") if models else None, quick=quick,
                           seed=seed, test_fraction=test_fraction, sequence_length=sequence_length, layout=layout,
                           label_column=label_column, verbose=not quiet, info=_info)
    p = result.protocol
    _info(f"protocol: {p['split']}; {p['train_records']:,} train / {p['test_records']:,} test records; "
          f"{p['test_duplicates_of_training_rows_removed']:,} test rows duplicating training rows removed; "
          f"{p['fitting']}; {p['unsupervised']}; {p['sequence_note']}")
    table = Table(title="benchmark (per record, test set)", title_justify="left")
    for col in ("model", "Accuracy", "Loss", "Recall", "Precision", "F-measure", "ROC-AUC", "macro-F1", "train s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, m in result.models.items():
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        table.add_row(name, f"{100 * m['accuracy']:.2f} %", fmt(m["loss"]), f"{100 * m['recall']:.2f} %",
                      f"{100 * m['precision']:.2f} %", f"{100 * m['f1']:.2f} %", fmt(m["roc_auc"]),
                      fmt(m.get("macro_f1")), f"{m['train_seconds']:.1f}")
    out.print(table)
    out.print(f"wrote {out_dir / 'results.md'}, {out_dir / 'results.json'}, {out_dir / 'report.html'}", highlight=False)


# ---------------------------------------------------------------------------- hunt
class HuntBy(str, Enum):
    host = "host"
    user = "user"


@app.command()
def hunt(
    model: Annotated[Path, typer.Option("--model", "-m", help="Saved model directory (trained on event logs).")],
    data: Annotated[list[Path], typer.Option("--data", "-d", help="Event logs: .evtx, JSON Lines (.gz), or folders; repeat for more.")],
    top: Annotated[int, typer.Option(help="Findings to report.")] = 20,
    by: Annotated[HuntBy, typer.Option(help="Rank windows of hosts or of users.")] = HuntBy.host,
    window: Annotated[str, typer.Option(help="Window length: 30s, 5m, 1h ...")] = "5m",
    html_out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the HTML report here.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write findings.json here ('-' for stdout).")] = None,
    top_k: Annotated[int, typer.Option(help="A window's score is the mean of its top-k event scores.")] = 10,
    evidence: Annotated[int, typer.Option(help="Events listed as evidence per finding.")] = 10,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Rank hosts or users and time windows by how unusual their events are, with the evidence."""
    from deepids.hunting.commands import run_hunt

    result = run_hunt(model, data, top=top, by=by.value, window=window, top_k=top_k, evidence=evidence,
                      progress=not quiet, info=_info)
    table = Table(title=f"top {len(result.findings)} {by.value} windows", title_justify="left")
    for col in ("rank", by.value, "window start", "score", "events", "top features", "label"):
        table.add_column(col, justify="right" if col in ("rank", "score", "events") else "left")
    for f in result.findings:
        table.add_row(str(f["rank"]), f["entity"], f["window_start"], f"{f['score']:.4g}", f"{f['events']:,}",
                      ", ".join(x["feature"] for x in f["top_features"][:3]), "; ".join(f.get("attack_labels", [])))
    if str(json_out) != "-":        # stdout carries the JSON alone when asked for it there
        out.print(table)
    if html_out:
        from deepids.hunting import write_hunt_report

        write_hunt_report(result, html_out, title=f"deepids hunt: {', '.join(str(p) for p in data)}")
        _info(f"wrote {html_out}")
    if json_out:
        _write_json(result.to_dict(), json_out)


def _is_logs(paths) -> bool:
    from deepids.io.logs import looks_like_logs

    return looks_like_logs(paths)

# --------------------------------------------------------------------------- flows
@app.command()
def flows(
    capture: Annotated[Path, typer.Argument(help="Packet capture: pcap or pcapng, optionally gzip-compressed.")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Output file: .parquet or .csv.")],
    flow_timeout: Annotated[float, typer.Option(help="Seconds after a flow's first packet that end it (CICFlowMeter: 120).")] = 120.0,
    activity_timeout: Annotated[float, typer.Option(help="Gap in seconds that separates active and idle periods (CICFlowMeter: 5).")] = 5.0,
    end_on_rst: Annotated[bool, typer.Option("--end-on-rst/--fin-only", help="Whether a TCP RST ends a flow like FIN does.")] = True,
    min_packets: Annotated[int, typer.Option(help="Drop flows with fewer packets (CICFlowMeter: 2).")] = 2,
    cic_names: Annotated[bool, typer.Option(help="Name the metadata as GeneratedLabelledFlows does (Flow ID, Source IP, ...).")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the capture report as JSON here ('-' for stdout).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Extract bidirectional flows with the CICFlowMeter features from a packet capture."""
    import time as _time

    from deepids.errors import ConfigError
    from deepids.io.flowmeter import capture_flows, to_cic_layout, write_flows

    if flow_timeout <= 0 or activity_timeout <= 0 or min_packets < 1:
        raise ConfigError("--flow-timeout and --activity-timeout must be positive, --min-packets at least 1")
    if not str(out_file).lower().endswith((".parquet", ".pq", ".csv")):
        raise ConfigError(f"cannot tell the output format of {out_file}: use .parquet or .csv")
    started = _time.perf_counter()
    table, report = capture_flows(capture, flow_timeout=flow_timeout, activity_timeout=activity_timeout,
                                  end_on_rst=end_on_rst, min_packets=min_packets)
    seconds = _time.perf_counter() - started
    out_file.parent.mkdir(parents=True, exist_ok=True)
    write_flows(to_cic_layout(table) if cic_names else table, out_file)
    _info(report.line())
    if not quiet:
        _info(f"{report.capture.packets:,} packets in {seconds:.2f}s ({report.capture.packets / max(seconds, 1e-9):,.0f} packets/s)")
    if json_out:
        _write_json({**report.to_dict(), "seconds": round(seconds, 3), "out": str(out_file)}, json_out)
    out.print(f"wrote {table.height:,} flows to {out_file}", highlight=False)


# ---------------------------------------------------------------------------- demo
@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where to put the model, scores and plots.")] = Path("demo-output"),
    epochs: Annotated[int, typer.Option(help="Maximum training epochs.")] = 20,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Train the LSTM autoencoder on the bundled CICIDS2017 sample and evaluate it on held-out rows."""
    from deepids.demo import run_demo

    run_demo(out_dir, epochs=epochs, verbose=not quiet, print_metrics=print_metrics, info=_info)


def _write_json(obj: dict, path: Path) -> None:
    text = json.dumps(obj, indent=2, default=_json_default)
    if str(path) == "-":
        sys.stdout.write(text + "\n")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    _info(f"wrote {path}")


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _fail(message: str) -> None:
    sys.stderr.write("deepids: error: " + " ".join(message.split()) + "\n")
    sys.exit(2)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app(standalone_mode=True)
    except DeepidsError as exc:
        _fail(str(exc))
    except OSError as exc:   # unreadable or unwritable paths the user named
        name = getattr(exc, "filename", None)
        _fail(f"{exc.strerror or exc}{f': {name}' if name else ''}")
    except KeyboardInterrupt:
        err.print("deepids: interrupted", highlight=False)
        sys.exit(130)


from deepids.serving.commands import register as _register_serving  # noqa: E402  (serve, stream)

_register_serving(app)


if __name__ == "__main__":
    main()
