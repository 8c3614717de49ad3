"""`deepids hunt` and `deepids evaluate` on event logs, as library calls the CLI wraps."""

from __future__ import annotations

import tempfile
from typing import Callable

import numpy as np

from deepids.errors import InputError
from deepids.hunting.hunt import (HuntResult, check_hunt_options, describe_findings, hunt_summary, rank_findings,
                                  rows_described)
from deepids.hunting.logs import attack_label_names, otrf_event_labels, otrf_root_of, require_log_model
from deepids.hunting.twopass import first_read, second_read
from deepids.io.logs import log_files, read_events
from deepids.models import load_model
from deepids.models.base import BaseDetector
from deepids.scoring import collect_scores


def _read_line(report) -> str:
    d = report.to_dict()
    line = f"read {d['records']:,} events from {len(d['files'])} file(s)"
    if d["rejected"]:
        line += "; rejected " + ", ".join(f"{n:,} {r}" for r, n in d["rejected_reasons"].items())
    return line


def run_hunt(model, data, *, top: int = 20, by: str = "host", window: str = "5m", top_k: int = 10,
             evidence: int = 10, progress=None, info: Callable[[str], None] = lambda m: None) -> HuntResult:
    """`hunt` on event log files without holding their events (`deepids.hunting.twopass`): the
    files are scored and ranked in a first read, and read again for the events the findings show."""
    detector = model if isinstance(model, BaseDetector) else load_model(model)
    check_hunt_options(by, top, top_k, window)
    resolution = getattr(detector, "score_resolution", 0.0)
    root = otrf_root_of(data)
    labels = attack_label_names(root) if root else None
    with tempfile.TemporaryFile(prefix="deepids-hunt-") as spool:
        first = first_read(detector, data, by, spool, progress)
        info(_read_line(first.report))
        windows, ranked = rank_findings(first.events, first.score, by=by, window=window, top=top, top_k=top_k,
                                        score_resolution=resolution)
        held = second_read(first, data, rows_described(ranked))
        findings = describe_findings(ranked, held, first.score, first.feature_error, first.feature_names, by=by,
                                     window=window, top_k=top_k, evidence=evidence, attack_labels=labels)
        first.feature_error = None                   # the map of the spooled errors, before the file closes
    summary = hunt_summary(windows, first.score, by=by, window=window, top_k=top_k, score_resolution=resolution)
    result = HuntResult(findings=findings, windows=windows.drop("rows"), summary=summary)
    result.summary["read"] = {k: v for k, v in first.report.to_dict().items() if k != "files"}
    if result.summary["events_in_no_window"]:
        info(f"{result.summary['events_in_no_window']:,} events in no {by} window (no {by} or no timestamp); "
             "scored, but not ranked")
    result.summary["model"] = detector.model_name
    if labels:
        result.summary["attack_labels"] = "ATT&CK labels from the OTRF INDEX.csv; shown only, never scored"
    return result


def evaluate_logs(detector: BaseDetector, data, progress=None,
                  info: Callable[[str], None] = lambda m: None) -> dict:
    """Per-event detection metrics on OTRF Empire recordings (labels derived from their agents).

    Two passes, neither holding the input: the labels are derived one recording (file) at a time
    (an Empire agent's process tree lies within its recording), and the events are scored by the
    one scorer, chunk by chunk (`deepids.scoring.collect_scores`), in the same order. Memory
    follows the largest recording, not the input."""
    from deepids.evaluation import detection_metrics

    root = otrf_root_of(data)
    if root is None:
        raise InputError("event logs carry no labels: evaluate needs OTRF recordings (a folder with INDEX.csv "
                         "and metadata/) whose Empire agents give per-event labels")
    require_log_model(detector)
    labels, used = _labels_by_recording(data, root)
    collected = collect_scores(detector, data, progress=progress)
    info(_read_line(collected.read))
    if len(collected.score) != len(labels):      # both passes read the same files in the same order
        raise InputError(f"the files changed while being evaluated ({len(labels):,} events labelled, "
                         f"{len(collected.score):,} scored)")
    keep = labels >= 0
    if not keep.any():
        raise InputError("none of these recordings has per-event labels (only Empire recordings with agents "
                         "listed in their metadata do)")
    info(f"labels: Empire agent PIDs and their child processes on the agents' hosts, for {len(used)} recording(s); "
         f"{int((~keep).sum()):,} events of unlabelled recordings left out")
    y = np.where(labels[keep] == 1, "attack", "benign")
    metrics = detection_metrics(y, collected.score[keep], detector.threshold_.value, None)
    metrics["labels"] = "OTRF Empire per-event labels (agent PID on the agent's host, and child processes)"
    metrics["recordings"] = used
    metrics["events_unlabelled_left_out"] = int((~keep).sum())
    metrics["records_rejected"] = collected.read.n_rejected
    metrics["threshold_method"] = detector.threshold_.method
    metrics["data"] = [str(p) for p in data]
    return metrics


def _labels_by_recording(data, root) -> tuple[np.ndarray, dict]:
    """Per-event labels (int8: 1 attack, 0 not, -1 unlabelled) of every file in reading order,
    derived one file at a time."""
    parts, used = [], {}
    for f in log_files(data):
        events, _ = read_events(f)          # the raw fields too: the agents are found from them
        labels, found = otrf_event_labels(events, root)
        parts.append(labels.astype(np.int8))
        used.update(found)
    return (np.concatenate(parts) if parts else np.empty(0, dtype=np.int8)), used
