"""`deepids hunt` and `deepids evaluate` on event logs, as library calls the CLI wraps."""

from __future__ import annotations

from typing import Callable

import numpy as np
import polars as pl

from deepids.errors import InputError
from deepids.hunting.hunt import HuntResult, hunt
from deepids.hunting.logs import attack_label_names, otrf_event_labels, otrf_root_of, require_log_model
from deepids.io.logs import log_files, read_events
from deepids.models import load_model
from deepids.models.base import BaseDetector, Scores
from deepids.scoring import ChunkScorer, check_kind, collect_scores, scored_chunks


def _read_line(report) -> str:
    d = report.to_dict()
    line = f"read {d['records']:,} events from {len(d['files'])} file(s)"
    if d["rejected"]:
        line += "; rejected " + ", ".join(f"{n:,} {r}" for r, n in d["rejected_reasons"].items())
    return line


def run_hunt(model, data, *, top: int = 20, by: str = "host", window: str = "5m", top_k: int = 10,
             evidence: int = 10, progress=None, info: Callable[[str], None] = lambda m: None) -> HuntResult:
    detector = model if isinstance(model, BaseDetector) else load_model(model)
    events, scores, report = scored_events(detector, data, progress)
    info(_read_line(report))
    root = otrf_root_of(data)
    labels = attack_label_names(root) if root else None
    result = hunt(events, scores, by=by, window=window, top=top, top_k=top_k, evidence=evidence,
                  attack_labels=labels, score_resolution=getattr(detector, "score_resolution", 0.0))
    result.summary["read"] = {k: v for k, v in report.to_dict().items() if k != "files"}
    if result.summary["events_in_no_window"]:
        info(f"{result.summary['events_in_no_window']:,} events in no {by} window (no {by} or no timestamp); "
             "scored, but not ranked")
    result.summary["model"] = detector.model_name
    if labels:
        result.summary["attack_labels"] = "ATT&CK labels from the OTRF INDEX.csv; shown only, never scored"
    return result


def scored_events(detector: BaseDetector, data, progress=None) -> tuple[pl.DataFrame, Scores, object]:
    """(events without their `raw` fields, with `process`/`process_tree` for models with process-tree
    context; their `Scores`; the read report): read and scored chunk by chunk by the one scorer, each
    chunk's `raw` dropped once scored, so a hunt holds the events' canonical fields only."""
    require_log_model(detector)
    scorer = ChunkScorer(detector, check_kind(detector, data))
    frames, parts, report = [], [], None
    for chunk, result, report in scored_chunks(detector, data, progress=progress, scorer=scorer):
        if result is None:
            continue
        kept = chunk.drop("raw", strict=False)
        processes = getattr(scorer.state, "processes", None)
        frames.append(kept.with_columns(processes) if processes is not None else kept)
        parts.append(result)
    if not frames:
        raise InputError(f"no events read from {', '.join(str(p) for p in report.files)}"
                         + (f" ({report.n_rejected:,} rejected)" if report.n_rejected else ""))
    ferr = [p.feature_error for p in parts]
    scores = Scores(score=np.concatenate([p.score for p in parts]),
                    feature_error=None if any(f is None for f in ferr) else np.concatenate(ferr),
                    feature_names=list(parts[0].feature_names))
    return pl.concat(frames, how="vertical_relaxed"), scores, report


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
