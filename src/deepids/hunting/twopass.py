"""`deepids hunt` in two reads of the files, holding per event only what the ranking reads.

First read (`first_read`): the one scorer scores the files chunk by chunk
(`deepids.scoring.scored_chunks`); of each chunk only the ranking columns are kept
(`ranking_columns`: the host or user and the timestamp, or the `process_tree`/`process` that the
model's process-tree context gives and the host), with the scores. The per-feature errors, read
for the top events of the findings only, are written to a temporary file and mapped back (on
disk, not in memory: 8 bytes per feature per event). The windows are ranked from these alone
(`deepids.hunting.hunt.rank_findings`).

Second read (`second_read`): the same files again through the same reader, in the same order, so
that the row numbers match (a different number of events is an InputError: the files changed),
keeping the canonical fields of the rows the ranked findings show (`rows_described`: every event
of each, for its window's counts, its tree's processes, its labels and its evidence). The findings
are then described as `hunt` describes them from events held whole, with identical results.

Memory follows the chunk size, the ranking columns (a few short strings, a timestamp and a score
per event) and the top findings' events, not every event's canonical fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import polars as pl

from deepids.errors import InputError
from deepids.hunting.hunt import GROUPS, HeldEvents
from deepids.hunting.logs import no_events, require_log_model
from deepids.io.logs import iter_event_batches
from deepids.models.base import BaseDetector
from deepids.scoring import ChunkScorer, check_kind, scored_chunks

PROCESS_COLUMNS = ("process", "process_tree")


def ranking_columns(by: str) -> tuple[list[str], list[str]]:
    """(canonical columns, process columns) that ranking by `by` reads, and describing needs per event:
    a grouped finding lists its processes (`process`) from the rows it describes."""
    if by in GROUPS:
        return ["host", "timestamp"], list(dict.fromkeys([GROUPS[by], "process"]))
    return [by, "timestamp"], []


class ErrorSpool:
    """Per-feature errors of every event, chunk by chunk, in a temporary file; `array()` maps them
    back (rows read from disk when indexed), or None when some chunk had none."""

    def __init__(self, file: IO[bytes]):
        self.file = file
        self.rows = 0
        self.width: int | None = None
        self.dtype: Any = None
        self.missing = False

    def add(self, errors: np.ndarray | None) -> None:
        if errors is None or self.missing:
            self.missing = True
            return
        errors = np.asarray(errors)
        if self.dtype is None:
            self.dtype, self.width = errors.dtype, errors.shape[1]
        self.file.write(np.ascontiguousarray(errors, dtype=self.dtype).tobytes())
        self.rows += errors.shape[0]

    def array(self) -> np.ndarray | None:
        if self.missing or self.dtype is None:
            return None
        self.file.flush()
        if self.rows == 0 or self.width == 0:
            return np.empty((self.rows, self.width or 0), dtype=self.dtype)
        return np.memmap(self.file, dtype=self.dtype, mode="r", shape=(self.rows, self.width))


@dataclass
class FirstRead:
    events: pl.DataFrame                  # the ranking columns of every scored event, in row order
    score: np.ndarray
    feature_error: np.ndarray | None      # a memory map of the spooled errors, indexed by row
    feature_names: list[str]
    report: Any                           # the read report
    scorer: ChunkScorer


def first_read(detector: BaseDetector, data, by: str, spool: IO[bytes], progress=None) -> FirstRead:
    """Score `data` chunk by chunk; keep the ranking columns and the scores, spool the feature errors."""
    require_log_model(detector)
    scorer = ChunkScorer(detector, check_kind(detector, data))
    columns, process_columns = ranking_columns(by)
    errors = ErrorSpool(spool)
    frames, scores, names, report = [], [], None, None
    for chunk, result, report in scored_chunks(detector, data, progress=progress, scorer=scorer):
        if result is None:
            continue
        kept = chunk.select(columns)
        processes = getattr(scorer.state, "processes", None)
        if processes is not None:
            kept = kept.hstack(processes.select([c for c in process_columns if c in processes.columns]).get_columns())
        frames.append(kept)
        scores.append(np.asarray(result.score))
        errors.add(result.feature_error)
        names = names if names is not None else list(result.feature_names)
    if not frames:
        raise no_events(report)
    return FirstRead(events=pl.concat(frames, how="vertical_relaxed"), score=np.concatenate(scores),
                     feature_error=errors.array(), feature_names=names, report=report, scorer=scorer)


def second_read(first: FirstRead, data, rows: np.ndarray) -> HeldEvents:
    """The canonical fields (not the raw ones) of the events at `rows` (ascending row numbers), read
    again by the reader of the first read (without the raw fields), with their process columns from
    the first read."""
    rows = np.asarray(rows, dtype=np.int64)
    parts, seen = [], 0
    for chunk, _ in iter_event_batches(data, batch_size=first.scorer.kind.default_chunk, keep_raw=False):
        if not chunk.height:
            continue
        lo, hi = np.searchsorted(rows, [seen, seen + chunk.height])
        if hi > lo:
            parts.append(chunk.drop("raw", strict=False)[(rows[lo:hi] - seen).tolist()])
        seen += chunk.height
    if seen != first.events.height:
        raise InputError(f"the files changed while being hunted ({first.events.height:,} events scored, "
                         f"{seen:,} read again)")
    frame = pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame()
    processes = [c for c in PROCESS_COLUMNS if c in first.events.columns]
    if processes and frame.height:
        frame = frame.hstack(first.events.select(processes)[rows.tolist()].get_columns())
    return HeldEvents(frame, rows)
