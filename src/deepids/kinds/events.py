"""The Windows events record kind (EVTX, JSON Lines in the NXLog or Winlogbeat layouts).

Canonical columns: :data:`deepids.io.events.EVENT_SCHEMA`. Rules: :mod:`deepids.io.events`
(one implementation for files and live events). Files: :func:`deepids.io.logs.iter_event_batches`,
chunk by chunk. Model inputs: :func:`deepids.features.events.event_features`, per event.

State across chunks: :meth:`EventKind.new_state` gives the object handed to
:meth:`EventKind.model_inputs` with every chunk, in record order (an :class:`EventState`). A model
trained with process-tree context (``feature_context_``) gets its fitted
:class:`~deepids.features.events.EventContext` there, whose bounded process table follows each
host's processes from one chunk to the next, so chunked scoring equals whole-input scoring;
other models need nothing carried.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from deepids.io.events import events_from_records
from deepids.io.logs import EVENT_CHUNK, is_log_file, iter_event_batches, looks_like_logs
from deepids.io.records import CanonicalRecords
from deepids.kinds import FileReader, RecordKind

#: the canonical event columns that name an event in a score frame
EVENT_ID_COLUMNS = ("timestamp", "host", "channel", "event_id", "record_id", "user", "image", "source_file")


@dataclass
class EventState:
    """What event features carry from chunk to chunk (see the module docstring): the model's fitted
    process-tree context with its process table, when the model was trained with one."""

    context: Any = None             # deepids.features.events.EventContext
    processes: Any = None           # the last chunk's `process` and `process_tree` (a polars frame; with context)


def _read_event_logs(paths, *, batch_size: int, layout=None, label_column=None):
    # raw fields kept: process-tree context reads process GUIDs from them
    return iter_event_batches(paths, batch_size=batch_size, keep_raw=True)


class EventKind(RecordKind):
    name = "windows-events"
    id_columns = EVENT_ID_COLUMNS
    default_chunk = EVENT_CHUNK
    noun = "events"

    def claims(self, paths: Sequence[Path]) -> bool:
        return looks_like_logs(paths)

    def own_reader(self) -> FileReader:
        return FileReader("event logs", claims=lambda p: Path(p).is_dir() or is_log_file(p),
                          read_chunks=_read_event_logs)

    def canonicalise(self, items: Sequence[Any], required: list[str], text_columns: Iterable[str] = (),
                     optional: Iterable[str] = ()) -> CanonicalRecords:
        events, index, rejected = events_from_records(items)
        return CanonicalRecords(events, index, rejected)

    def reads_model(self, input_columns: Sequence[str]) -> bool:
        from deepids.features.events import is_log_model

        return is_log_model(input_columns)

    def new_state(self, model: Any = None) -> EventState:
        context = getattr(model, "feature_context_", None)
        if not context:
            return EventState()
        from deepids.features.events import EventContext

        return EventState(EventContext.from_dict(context))

    def model_inputs(self, chunk: pl.DataFrame, state: Any = None) -> pl.DataFrame:
        """Per-event features (with process-tree context when the model has one, its process table
        carried in `state`), plus ``timestamp``, ``host`` and ``user_name`` (for models that window by
        entity)."""
        from deepids.features.events import event_features

        context = getattr(state, "context", None)
        if context is not None:
            parts = context.keys(chunk)
            features = context.features_from(parts)
            state.processes = type(context).processes(parts)   # for scores above the event (hunt)
        else:
            features = event_features(chunk)
        return features.with_columns(
            chunk.get_column("timestamp"), chunk.get_column("host"), chunk.get_column("user").alias("user_name"))
