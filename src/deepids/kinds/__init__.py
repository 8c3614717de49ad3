"""Record kinds: what a record is, from a file or a socket to the table a model reads.

A record kind (network flows, Windows events; later connection logs) owns, once:

* its canonical columns, and ``id_columns``: those that name a record in a score frame;
* its cast-and-reject rules (they live in :mod:`deepids.io`: ``io/cast.py`` for flows,
  ``io/events.py`` for events), applied alike to files and to live records;
* its chunked file readers (:meth:`RecordKind.read_chunks`), made of registered
  :class:`FileReader` objects;
* its live canonicaliser (:meth:`RecordKind.canonicalise`), for records arriving one by one
  (HTTP bodies, NDJSON or CSV lines): every item is accepted or rejected with a reason;
* the model's input table of a canonical chunk (:meth:`RecordKind.model_inputs`), given a
  state object that the caller creates once per model (:meth:`RecordKind.new_state`) and hands
  from chunk to chunk, in record order. It is the hook for per-entity state that outlives one
  chunk (for events: the process table of a model trained with process-tree context,
  :class:`deepids.features.events.EventContext`), just as a sequence model's per-entity history
  (``model.new_history()``) is carried by the scorer. Files, streams and the service all pass
  it the same way, so a record gets the same inputs however its input was cut.

The one path: ``kind_of_paths(paths).read_chunks(...)`` or ``kind.canonicalise(items, ...)``
give canonical chunks; :mod:`deepids.scoring` turns each into one score frame. Which kind a
model reads is known from its input columns (:func:`kind_of_model`); nothing else dispatches
on it.

Adding a source of an existing kind (a Zeek ``conn.log`` reader giving flows)::

    from deepids.kinds import FileReader, register_reader
    register_reader("flows", FileReader("zeek", claims=is_zeek_log, read_chunks=iter_zeek_batches))

``claims(path) -> bool`` says whether the reader reads a path (file or directory);
``read_chunks(paths, *, batch_size, layout=None, label_column=None)`` yields
``(canonical chunk, report)`` pairs of at most ``batch_size`` rows, whose reports have
``merge``, ``to_dict`` and ``n_rejected`` (see :class:`deepids.io.ReadReport`). Registered
readers are asked first, in registration order; a kind's own reader comes last.

Adding a kind: subclass :class:`RecordKind` and ``register_kind(kind)``; its ``claims`` says
which paths it reads, its ``reads_model`` which models read it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from deepids.errors import ConfigError
from deepids.io.records import CanonicalRecords

__all__ = ["FileReader", "RecordKind", "register_kind", "register_reader", "kind_of_paths", "kind_of_model",
           "kind_named", "KINDS"]


@dataclass(frozen=True)
class FileReader:
    """A file source of one record kind: which paths it reads, and how (canonical chunks)."""

    name: str
    claims: Callable[[Path], bool]
    read_chunks: Callable[..., Iterator[tuple[pl.DataFrame, Any]]]


class RecordKind(ABC):
    """The interface every record kind implements (see the module docstring)."""

    name: str = ""
    #: the canonical columns that name a record in a score frame (those present are kept)
    id_columns: tuple[str, ...] = ()
    #: records per chunk when reading files for scoring (peak memory follows it)
    default_chunk: int = 100_000
    #: what a user calls one record of this kind, in messages ("scored 1,252 events")
    noun: str = "records"

    def __init__(self) -> None:
        self.readers: list[FileReader] = []

    # ------------------------------------------------------------------ files
    @abstractmethod
    def claims(self, paths: Sequence[Path]) -> bool:
        """True when these paths hold records of this kind."""

    @abstractmethod
    def own_reader(self) -> FileReader:
        """The kind's own file reader (asked after the registered ones)."""

    def read_chunks(self, paths, *, batch_size: int | None = None, layout: str | None = None,
                    label_column: str | None = None) -> Iterator[tuple[pl.DataFrame, Any]]:
        """Canonical chunks of the files, in order, each with its read report."""
        paths = [Path(p) for p in (paths if isinstance(paths, (list, tuple)) else [paths])]
        size = batch_size or self.default_chunk
        for reader, group in _groups(paths, [*self.readers, self.own_reader()]):
            yield from reader.read_chunks(group, batch_size=size, layout=layout, label_column=label_column)

    # ------------------------------------------------------------------- live
    @abstractmethod
    def canonicalise(self, items: Sequence[Any], required: list[str], text_columns: Iterable[str] = (),
                     optional: Iterable[str] = ()) -> CanonicalRecords:
        """Records arriving one by one -> canonical table; each bad one rejected with a reason."""

    # ------------------------------------------------------------------ model
    @abstractmethod
    def reads_model(self, input_columns: Sequence[str]) -> bool:
        """True when a model with these input columns reads records of this kind."""

    def new_state(self, model: Any = None) -> Any:
        """State carried from chunk to chunk by :meth:`model_inputs`, for `model` (None: none needed)."""
        return None

    def model_inputs(self, chunk: pl.DataFrame, state: Any = None) -> pl.DataFrame:
        """The table the model reads for a canonical chunk (updates ``state`` in place)."""
        return chunk


def _groups(paths: list[Path], readers: list[FileReader]) -> Iterator[tuple[FileReader, list[Path]]]:
    """Consecutive paths read by the same reader, in order."""
    current: FileReader | None = None
    group: list[Path] = []
    for p in paths:
        reader = next(r for r in readers if r.claims(p))
        if current is not None and reader is not current:
            yield current, group
            group = []
        current = reader
        group.append(p)
    if current is not None:
        yield current, group


KINDS: dict[str, RecordKind] = {}


def register_kind(kind: RecordKind, *, first: bool = True) -> RecordKind:
    """Add a kind; ``first`` puts it before the others (more specific kinds go first, flows last)."""
    items = [(k, v) for k, v in KINDS.items() if k != kind.name]
    KINDS.clear()
    KINDS.update([(kind.name, kind), *items] if first else [*items, (kind.name, kind)])
    return kind


def register_reader(kind_name: str, reader: FileReader) -> None:
    """Add a file reader to a kind (asked before the kind's own reader)."""
    kind_named(kind_name).readers.append(reader)


def kind_named(name: str) -> RecordKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown record kind {name!r}; known: {', '.join(KINDS)}") from None


def kind_of_paths(paths) -> RecordKind:
    """The kind of records the paths hold (flows unless a more specific kind claims them)."""
    paths = [Path(p) for p in (paths if isinstance(paths, (list, tuple)) else [paths])]
    return next(k for k in KINDS.values() if k.claims(paths))


def kind_of_model(model) -> RecordKind:
    """The kind of records a fitted model reads, from its input columns."""
    columns = getattr(model, "input_columns_", None)
    if columns is None and getattr(model, "preprocessor_", None) is not None:
        columns = model.preprocessor_.input_columns
    columns = list(columns or ())
    return next(k for k in KINDS.values() if k.reads_model(columns))


def _register_builtin() -> None:
    from deepids.kinds.events import EventKind
    from deepids.kinds.flows import CONNECTION_LOGS, FlowKind

    register_kind(FlowKind())
    register_reader("flows", CONNECTION_LOGS)     # Zeek, Suricata EVE, nfdump, NFStream
    register_kind(EventKind())          # before flows: it claims log files, flows claim the rest


_register_builtin()
