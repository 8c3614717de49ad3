"""What the `deepids` command shows: tables, one-line messages, JSON documents.

Commands decide what to show; this module decides how. Both consoles have rich markup
off, so text that comes from the data (a host name such as ``[/x]``, a file path with
brackets) is printed as it is and cannot break the output.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

out = Console(markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe(text) -> str:
    """Text from the data as it may reach a terminal: control characters (escape sequences that
    could clear the screen or retitle the window) shown as \\xNN, never sent raw."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def _row(table: Table, *cells) -> None:
    table.add_row(*(safe(c) for c in cells))


def info(message: str) -> None:
    """A progress or summary line on stderr (stdout is kept for results)."""
    err.print(safe(message), highlight=False)


def said(message: str) -> None:
    """A result line on stdout (e.g. 'saved DIR', 'wrote FILE')."""
    out.print(safe(message), highlight=False)


def fail(message: str) -> None:
    """A user's mistake: one line on stderr, exit code 2."""
    sys.stderr.write("deepids: error: " + " ".join(safe(message).split()) + "\n")
    sys.exit(2)


class ConsoleLogHandler(logging.Handler):
    """The library's log records, one line each on stderr through the rich console (markup off):
    'deepids: warning: ...'; info records without the level."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record).removeprefix("deepids: ")
            level = "" if record.levelno == logging.INFO else record.levelname.lower() + ": "
            err.print(safe(f"deepids: {level}{message}"), highlight=False)
        except Exception:       # a broken stderr must not take the command down with it
            self.handleError(record)


def setup_logging(level: str = "warning") -> None:
    """Show the `deepids` loggers' records from `level` up on stderr (installed once per process).

    The logger's own level is only ever lowered (for info or debug), so a caller's logging set-up
    (pytest's caplog, an embedding application) keeps working.
    """
    logger = logging.getLogger("deepids")
    handler = next((h for h in logger.handlers if isinstance(h, ConsoleLogHandler)), None)
    if handler is None:
        handler = ConsoleLogHandler()
        logger.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    handler.setLevel(numeric)
    if numeric < logger.getEffectiveLevel():
        logger.setLevel(numeric)


def report_read(report, what: str = "read") -> None:
    """One line for a read report (records, layout, rejections by reason), then its notes."""
    d = report if isinstance(report, dict) else report.to_dict()
    line = f"{what} {d['records']:,} records ({d['layout']})"
    if d["rejected"]:
        reasons = ", ".join(f"{n:,} {r}" for r, n in d["rejected_reasons"].items())
        line += f"; rejected {d['rejected']:,}: {reasons}"
    info(line)
    for note in d.get("notes", ()):     # e.g. what a packet capture held, damage
        info(note)


def write_json(obj: dict, path: Path) -> None:
    """Write a document as JSON to a file, or to stdout alone when the path is '-'."""
    text = json.dumps(obj, indent=2, default=_json_default)
    if str(path) == "-":
        sys.stdout.write(text + "\n")
        return
    from deepids.atomic import write_text

    write_text(path, text + "\n")          # whole or not at all, 0640, never through a symlink
    info(f"wrote {path}")


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f} %"


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def print_metrics(metrics: dict, title: str = "detection metrics (per record)") -> None:
    """The detection metrics, the per-label rates and, for models that name attacks, the families."""
    table = Table(title=title, title_justify="left")
    for col in ("Accuracy", "Loss", "Recall", "Precision", "F-measure", "ROC-AUC", "PR-AUC"):
        table.add_column(col, justify="right")
    table.add_row(_pct(metrics["accuracy"]), _num(metrics["loss"]), _pct(metrics["recall"]),
                  _pct(metrics["precision"]), _pct(metrics["f1"]), _num(metrics["roc_auc"]),
                  _num(metrics["pr_auc"]))
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


def score_line(d: dict, threshold: float, unit: str) -> str:
    """One line for a scoring run: scored, alerts, rejected by reason, speed."""
    line = (f"scored {d['records_scored']:,} {unit}, {d['alerts']:,} alerts "
            f"(threshold {threshold:.4g}), rejected {d['records_rejected']:,}")
    if d["rejected_reasons"]:
        line += " (" + ", ".join(f"{n:,} {r}" for r, n in d["rejected_reasons"].items()) + ")"
    return line + f"; {d['records_per_second'] or 0:,.0f} {unit}/s"


def inspect_table(d: dict, title: str) -> Table:
    """What `deepids inspect` found: layout, records, rejections, time range, entities, labels."""
    table = Table(show_header=False, title=title, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    _row(table, "layout", d["layout"])
    _row(table, "records", f"{d['records']:,}")
    _row(table, "rejected", f"{d['rejected']:,}" + "".join(f"\n  {n:,} {r}" for r, n in d["rejected_reasons"].items()))
    if d.get("ignored"):
        _row(table, "ignored", f"{sum(d['ignored'].values()):,}" + "".join(f"\n  {n:,} {r}" for r, n in d["ignored"].items()))
    _row(table, "exact duplicates", f"{d.get('duplicates', 0):,}")
    if d.get("time_range"):
        _row(table, "time range", " to ".join(d["time_range"]))
    if d.get("entities"):
        _row(table, "entities", ", ".join(f"{n:,} {k}" for k, n in d["entities"].items()))
    for key in ("hosts", "channels", "event_ids"):
        if d.get(key):
            _row(table, key.replace("_", " "), "\n".join(f"{n:>8,}  {k}" for k, n in d[key].items()))
    labels = d.get("labels") or {}
    if d.get("notes"):
        _row(table, "notes", "\n".join(d["notes"]))
    _row(table, "labels", "\n".join(f"{n:>8,}  {k}" for k, n in sorted(labels.items(), key=lambda kv: -kv[1]))
                  or "none")
    if d.get("columns"):          # column roles: what training would use, and why not the rest
        features = [r["column"] for r in d["columns"] if r["role"] == "feature"]
        others = [f"{r['column']}: {r['role']}, {r['reason']}" for r in d["columns"] if r["role"] != "feature"]
        table.add_row("features", f"{len(features)}: " + ", ".join(features[:12]) + (", ..." if len(features) > 12 else ""))
        table.add_row("not features", "\n".join(others) or "none")
    return table


def benchmark_protocol_line(p: dict) -> str:
    return (f"protocol: {p['split']}; {p['train_records']:,} train / {p['test_records']:,} test records; "
            f"{p['test_duplicates_of_training_rows_removed']:,} test rows duplicating training rows removed; "
            f"{p['fitting']}; {p['unsupervised']}; {p['sequence_note']}")


def benchmark_table(models: dict) -> Table:
    """One row per model of a benchmark run (per record, test set)."""
    table = Table(title="benchmark (per record, test set)", title_justify="left")
    for col in ("model", "Accuracy", "Loss", "Recall", "Precision", "F-measure", "ROC-AUC", "macro-F1", "train s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, m in models.items():
        table.add_row(name, _pct(m["accuracy"]), _num(m["loss"]), _pct(m["recall"]), _pct(m["precision"]),
                      _pct(m["f1"]), _num(m["roc_auc"]), _num(m.get("macro_f1")), f"{m['train_seconds']:.1f}")
    return table


def hunt_table(findings: list[dict], by: str) -> Table:
    """The ranked windows of `deepids hunt`, with their top features and any ATT&CK labels."""
    table = Table(title=f"top {len(findings)} {by} windows", title_justify="left")
    for col in ("rank", by, "window start", "score", "events", "top features", "label"):
        table.add_column(col, justify="right" if col in ("rank", "score", "events") else "left")
    for f in findings:
        _row(table, str(f["rank"]), f["entity"], f["window_start"], f"{f['score']:.4g}", f"{f['events']:,}",
                      ", ".join(x["feature"] for x in f["top_features"][:3]), "; ".join(f.get("attack_labels", [])))
    return table


def models_table(rows: list[dict]) -> Table:
    """`deepids models`: one row per model; parameters as name=default, with the train option that sets it."""
    table = Table(title="models (deepids train --model NAME)", title_justify="left", show_lines=True)
    table.add_column("model")
    table.add_column("kind")
    table.add_column("parameters (default) [train option]")
    for row in rows:
        params = "\n".join(f"{p['name']}={p['default']!r}" + (f"  {p['option']}" if p["option"] else "")
                           for p in row["parameters"])
        table.add_row(row["model"], row["kind"], params)
    return table
