"""What a read accepted, rejected and found: :class:`ReadReport`, shared by every reader."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from deepids.io.schema import LABEL

__all__ = ["ReadReport", "frame_report", "ENTITY_COLUMNS"]

#: the columns whose distinct values a report counts
ENTITY_COLUMNS = ("src_ip", "dst_ip", "dst_port")


def merge_hashes(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """Two sorted arrays of distinct row hashes -> (their sorted union, how many of `b` are in `a`).

    Linear in their sizes (a stable sort of two sorted runs merges them), so a report merged
    chunk by chunk costs what its last merge copies, not a sort of everything each time."""
    if not a.size or not b.size:
        return (a if a.size else b), 0
    pos = np.searchsorted(a, b)
    pos[pos == a.size] = 0
    common = a[pos] == b
    return np.sort(np.concatenate([a, b[~common]]), kind="stable"), int(common.sum())


@dataclass
class ReadReport:
    """What a read accepted, rejected and found. Reports of batches or files ``merge``.

    ``duplicates`` counts exact duplicate rows among the accepted rows (they are kept).
    ``numbers`` (a batch's report only) holds the record numbers of the batch's rows: a row's
    position among the records read, rejected ones included, so they match the numbers a stream
    or a service gives the same records. A CSV row with the wrong number of fields has no known
    position (Arrow drops it while parsing): it is counted, not numbered, and the rows after it
    are numbered as if it were not there.
    ``entities`` is the number of distinct values of ``src_ip``, ``dst_ip`` and
    ``dst_port`` where present. Both stay exact under :meth:`merge`: a report carries the
    row hashes and entity values it has seen (private fields, excluded from ``to_dict``,
    ``repr`` and ``==``), about 8 bytes per distinct row.

    ``ignored`` counts input lines that are no records of this kind and are skipped on
    purpose, by what they are (a Suricata ``dns`` event in an EVE file, Zeek's ``#close``,
    nfdump's summary footer): records + rejected + ignored = the input's lines.
    """

    layout: str
    files: list[str] = field(default_factory=list)
    records: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    time_range: tuple[str, str] | None = None
    entities: dict[str, int] = field(default_factory=dict)
    unparsed_timestamps: int = 0
    notes: list[str] = field(default_factory=list)    # e.g. what a packet capture held, damage
    ignored: dict[str, int] = field(default_factory=dict)
    _row_hashes: np.ndarray | None = field(default=None, repr=False, compare=False)
    _entity_values: dict[str, set] | None = field(default=None, repr=False, compare=False)
    #: a batch's own report: the record number of each row of its frame (its position among the
    #: records read, rejected ones included, from 0 over all files), and how many records the batch
    #: read; neither survives `merge`
    numbers: np.ndarray | None = field(default=None, repr=False, compare=False)
    parsed: int = field(default=0, repr=False, compare=False)

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "layout": self.layout,
            "files": list(self.files),
            "records": int(self.records),
            "rejected": int(self.n_rejected),
            "rejected_reasons": {k: int(v) for k, v in
                                 sorted(self.rejected.items(), key=lambda kv: (-kv[1], kv[0]))},
            "duplicates": int(self.duplicates),
            "labels": {k: int(v) for k, v in
                       sorted(self.labels.items(), key=lambda kv: (-kv[1], kv[0]))},
            "time_range": list(self.time_range) if self.time_range else None,
            "unparsed_timestamps": int(self.unparsed_timestamps),
            "entities": {k: int(v) for k, v in self.entities.items()},
            **({"notes": list(self.notes)} if self.notes else {}),
            **({"ignored": {k: int(v) for k, v in sorted(self.ignored.items(), key=lambda kv: (-kv[1], kv[0]))}}
               if self.ignored else {}),
        }

    def merge(self, other: ReadReport) -> ReadReport:
        """A new report covering both; ``self`` and ``other`` are left unchanged.

        Duplicates across the two are found through the carried row hashes, and distinct
        entity counts through the carried values; without them (reports built by hand)
        the counts are summed.
        """
        files = list(self.files) + [f for f in other.files if f not in self.files]
        rejected = Counter(self.rejected)
        rejected.update(other.rejected)
        labels = Counter(self.labels)
        labels.update(other.labels)
        ignored = Counter(self.ignored)
        ignored.update(other.ignored)

        duplicates = self.duplicates + other.duplicates
        hashes: np.ndarray | None = None
        a, b = self._row_hashes, other._row_hashes
        if a is not None and b is not None:
            hashes, common = merge_hashes(a, b)
            duplicates += common
        elif a is not None or b is not None:
            hashes = None   # cannot stay exact: drop the hashes

        entities: dict[str, int] = {}
        values: dict[str, set] | None = None
        ea, eb = self._entity_values, other._entity_values
        keys = list(dict.fromkeys([*self.entities, *other.entities]))
        if ea is not None and eb is not None:
            values = {}
            for k in keys:
                if k in ea and k in eb:
                    values[k] = ea[k] | eb[k]
                else:
                    values[k] = set(ea.get(k, eb.get(k, set())))
                entities[k] = len(values[k])
        else:
            for k in keys:
                entities[k] = self.entities.get(k, 0) + other.entities.get(k, 0)

        return ReadReport(
            layout=self.layout,
            files=files,
            records=self.records + other.records,
            rejected=dict(rejected),
            duplicates=duplicates,
            labels=dict(labels),
            time_range=_merge_ranges(self.time_range, other.time_range),
            entities=entities,
            unparsed_timestamps=self.unparsed_timestamps + other.unparsed_timestamps,
            notes=list(self.notes) + [n for n in other.notes if n not in self.notes],
            ignored=dict(ignored),
            _row_hashes=hashes,
            _entity_values=values,
        )


def _merge_ranges(a: tuple[str, str] | None, b: tuple[str, str] | None) -> tuple[str, str] | None:
    if a is None:
        return b
    if b is None:
        return a
    lo = min(datetime.fromisoformat(a[0]), datetime.fromisoformat(b[0]))
    hi = max(datetime.fromisoformat(a[1]), datetime.fromisoformat(b[1]))
    return (lo.isoformat(), hi.isoformat())


def frame_report(layout: str, path, frame, rejected: dict[str, int], *, unparsed: int = 0,
                 ignored: dict[str, int] | None = None, notes=()) -> ReadReport:
    """The :class:`ReadReport` of one canonical batch, exact under ``merge`` (every reader's)."""
    hashes = np.empty(0, dtype=np.uint64)
    duplicates = 0
    if frame.height and frame.width:
        h = frame.hash_rows().to_numpy()
        hashes = np.unique(h)
        duplicates = int(h.size - hashes.size)
    labels: dict[str, int] = {}
    if LABEL in frame.columns and frame.height:
        vc = frame[LABEL].value_counts()
        labels = dict(zip(vc[LABEL].to_list(), (int(x) for x in vc["count"].to_list())))
    time_range = None
    if "timestamp" in frame.columns and frame.height:
        lo, hi = frame["timestamp"].min(), frame["timestamp"].max()
        if lo is not None:
            time_range = (lo.isoformat(), hi.isoformat())
    values = {c: set(frame[c].drop_nulls().unique().to_list()) for c in ENTITY_COLUMNS if c in frame.columns}
    return ReadReport(layout=layout, files=[str(path)], records=frame.height, rejected=dict(rejected),
                      duplicates=duplicates, labels=labels, time_range=time_range,
                      entities={k: len(v) for k, v in values.items()}, unparsed_timestamps=unparsed,
                      notes=list(notes), ignored={k: int(v) for k, v in (ignored or {}).items() if v},
                      _row_hashes=hashes, _entity_values=values)
