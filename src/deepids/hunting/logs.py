"""What the CLI does with event logs: train, score, evaluate and hunt on `.evtx` / JSON Lines input.

A log model is any detector trained on `event_features` (its inputs include the `event` column);
the fitted vocabularies and scalers travel in its `model.json`, so scoring needs nothing else.
Models trained by `fit_log_model` also carry an `EventContext` (process-tree context and rarity
tables fitted on the training events, `feature_context` in `model.json`); `LogFeatures` rebuilds
it and carries its process table from one chunk of events to the next.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from deepids.errors import InputError, SchemaError
from deepids.features.events import EventContext, event_features, is_log_model
from deepids.io.logs import EVENT_CHUNK, LogReadReport, iter_event_batches, read_events
from deepids.io.otrf import empire_attack_labels, read_otrf_index, recording_agents
from deepids.models.base import BaseDetector, Scores
from deepids.scoring import score_files


def require_log_model(model: BaseDetector, where: str = "model") -> None:
    columns = getattr(model, "input_columns_", None)
    if columns is not None and not is_log_model(columns):
        raise SchemaError(f"{where} was trained on flows, not event logs: train one on logs "
                          "(deepids train --data LOGS)")


def no_events(report: LogReadReport) -> InputError:
    """The error for a read that found no event in its files."""
    return InputError(f"no events read from {', '.join(str(p) for p in report.files)}"
                      + (f" ({report.n_rejected:,} rejected)" if report.n_rejected else ""))


def read_log_events(paths, progress: bool = False) -> tuple[pl.DataFrame, LogReadReport]:
    """(canonical events, the read report); no events at all is an InputError."""
    events, report = read_events(paths, progress=progress)
    if events.height == 0:
        raise no_events(report)
    return events, report


def read_log_features(paths, progress: bool = False, model: BaseDetector | None = None
                      ) -> tuple[pl.DataFrame, pl.DataFrame, LogReadReport]:
    """(canonical events, their model features, the read report). With a `model` trained with process-tree
    context, its context makes the features and the events gain `process` and `process_tree` columns."""
    events, report = read_log_events(paths, progress)
    if model is None:
        return events, event_features(events), report
    features, processes = LogFeatures(model).with_processes(events)
    if processes is not None:
        events = events.with_columns(processes)
    return events, features, report


def fit_log_model(detector: BaseDetector, events: pl.DataFrame, **fit_options) -> BaseDetector:
    """Fit the event context (process tree, rarity tables) and then `detector` on training events
    (`fit_options`: `fit`'s progress, checkpoint_dir, resume)."""
    context = EventContext()
    parts = context.keys(events)
    context.fit_keys(parts)
    detector.fit(context.features_from(parts), **fit_options)
    detector.feature_context_ = context.to_dict()
    return detector


def log_context_from_files(paths, *, batch_size: int = EVENT_CHUNK, progress=None
                           ) -> tuple[EventContext, LogReadReport]:
    """`deepids train` on event logs, first read: the event context (process tree and rarity tables)
    fitted on the files' events a chunk at a time, and the read report; `progress(files done, files)`.
    With `fit_log_files`, the model `fit_log_model` makes, never holding the events."""
    report = LogReadReport()

    def chunks():
        nonlocal report
        for events, part in iter_event_batches(paths, batch_size=batch_size, keep_raw=True, progress=progress):
            report = report.merge(part)
            if events.height:
                yield events

    context = EventContext.fit_chunks(chunks())
    if report.records == 0:
        raise no_events(report)
    return context, report


def fit_log_files(detector: BaseDetector, context: EventContext, paths, *, batch_size: int = EVENT_CHUNK,
                  **fit_options) -> BaseDetector:
    """Second read: each chunk's features with the fitted `context`; the detector fits on the features
    of every event, only the columns it reads where it names them before fitting (`event-rarity`: its
    rarities and traits, about 150 bytes an event), never the events themselves."""
    columns = _inputs_named_before_fitting(detector)
    frames = []
    for events, _ in iter_event_batches(paths, batch_size=batch_size, keep_raw=True):
        if events.height:
            features = context.features_from(context.keys(events))
            frames.append(features.select(columns) if columns else features)
    context.reset()
    detector.fit(pl.concat(frames), **fit_options)
    detector.feature_context_ = context.to_dict()
    return detector


def _inputs_named_before_fitting(detector: BaseDetector) -> list[str] | None:
    try:
        return list(detector.input_columns_)       # a property of models with fixed inputs (event-rarity)
    except AttributeError:                         # set by fitting (the GAN, the autoencoders)
        return None


class LogFeatures:
    """Features of event chunks for one model: its fitted `EventContext` (when it has one), whose
    process table is carried from chunk to chunk, or the stateless `event_features`."""

    def __init__(self, model: BaseDetector):
        state = getattr(model, "feature_context_", None)
        self.context = EventContext.from_dict(state) if state else None

    def __call__(self, events: pl.DataFrame) -> pl.DataFrame:
        return self.with_processes(events)[0]

    def with_processes(self, events: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        """(features, the `process` and `process_tree` of each event, or None for a model without context)."""
        if self.context is None:
            return event_features(events), None
        parts = self.context.keys(events)
        return self.context.features_from(parts), EventContext.processes(parts)


def score_events(model: BaseDetector, features: pl.DataFrame) -> Scores:
    require_log_model(model)
    return model.score_records(features)


def score_log_files(model: BaseDetector, paths, out: str | Path, top_k: int = 3, progress: bool = False) -> dict:
    """One row per event into out, chunk by chunk: the one scorer's frame (`deepids.scoring.score_files`)."""
    return score_files(model, paths, out, top_k=top_k, progress=progress).to_dict()


def otrf_root_of(paths) -> Path | None:
    """The OTRF dataset folder (holding INDEX.csv and metadata/) the paths lie in, if any.

    Only the path itself and its three nearest parents are looked at (an OTRF recording lies at
    ``ROOT/atomic/<tactic>/<file>``): an INDEX.csv further up, in some unrelated ancestor
    folder, never labels the data."""
    for p in map(Path, paths):
        for parent in [p, *list(p.resolve().parents)[:3]]:
            if (parent / "INDEX.csv").exists() and (parent / "metadata").is_dir():
                return parent
    return None


def otrf_event_labels(events: pl.DataFrame, root: str | Path) -> tuple[np.ndarray, dict]:
    """Per-event labels of OTRF Empire recordings (1 attack, 0 not, -1 unlabelled: no agent known)."""
    labels = np.full(events.height, -1, dtype=np.int64)
    used = {}
    files = events.get_column("source_file").to_numpy()
    for rec in read_otrf_index(root):
        mask = files == rec.name
        if not mask.any():
            continue
        agents = recording_agents(root, rec) if rec.is_empire else []
        if not agents:
            continue
        labels[mask] = empire_attack_labels(events.filter(pl.Series(mask)), agents)
        used[rec.name] = {"agents": [f"{a.host}:{a.pid}" for a in agents], "attack_events": int(labels[mask].sum()),
                          "events": int(mask.sum())}
    return labels, used


def attack_label_names(root: str | Path) -> dict[str, str]:
    """source_file -> the recording's ATT&CK label from INDEX.csv (for display beside findings only)."""
    return {rec.name: rec.attack_label() for rec in read_otrf_index(root)}
