"""Windows of records per entity.

A window is the `sequence_length` most recent records of one entity (a source IP by default),
ending at a given record. Every record gets the window that ends at it, so every record gets a
score; the first records of an entity are padded by repeating the entity's first record.

Windows are never materialised for a whole file: `windows_by_entity` returns an index matrix
of shape (n_records, sequence_length) into the feature matrix, and batches are gathered from it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import polars as pl


def window_order(df: pl.DataFrame, entity: str | None, time: str | None = "timestamp") -> tuple[np.ndarray, np.ndarray]:
    """Entity group codes and the record order to window in.

    Records are grouped by `entity` (all one group when it is None or absent) and ordered by
    `time` within the group when that column exists, by file order otherwise (stable: ties keep
    file order). Returns (group codes, order), both of length n.
    """
    n = df.height
    if entity and entity in df.columns:
        codes = df.select(pl.col(entity).cast(pl.Utf8).fill_null("").rank("dense")).to_series().to_numpy().astype(np.int64)
    else:
        codes = np.zeros(n, dtype=np.int64)
    keys = [np.arange(n)]
    if time and time in df.columns:
        t = df.get_column(time)
        tnum = t.cast(pl.Int64).fill_null(np.iinfo(np.int64).min).to_numpy()
        keys.append(tnum)
    keys.append(codes)
    order = np.lexsort(keys)   # last key is primary: group, then time, then file order
    return codes, order


def windows_by_entity(codes: np.ndarray, order: np.ndarray, sequence_length: int) -> np.ndarray:
    """Index matrix (n, sequence_length): row i lists the records of the window ending at record i.

    `codes` and `order` come from `window_order`. Indices refer to rows of the input table.
    """
    n = len(codes)
    if n == 0:
        return np.zeros((0, sequence_length), dtype=np.int64)
    sorted_codes = codes[order]
    starts = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    pos = np.arange(n)[:, None] + np.arange(-sequence_length + 1, 1)[None, :]
    pos = np.maximum(pos, group_start[:, None])
    win_sorted = order[pos]                     # windows in sorted order, as original row ids
    out = np.empty_like(win_sorted)
    out[order] = win_sorted                     # back to original row order
    return out


@dataclass
class EntityHistory:
    """The last `sequence_length - 1` feature rows of each entity, carried across chunks.

    Lets chunked scoring (and streaming) give a record the same window it would get if the
    whole file were scored at once.

    For long-running use (``deepids serve`` / ``deepids stream``) the state can be bounded:
    ``max_entities`` keeps at most that many entities, evicting the least recently seen one
    first, and ``idle_ttl`` (seconds, measured with ``clock``) forgets an entity not seen for
    that long. An evicted entity that comes back starts a fresh window (padded with its first
    new record), exactly like an entity seen for the first time. ``evicted_lru`` and
    ``evicted_idle`` count evictions. Both bounds default to None: unbounded, as in batch scoring.
    """

    sequence_length: int
    tails: dict[str, np.ndarray] = field(default_factory=OrderedDict)
    max_entities: int | None = None
    idle_ttl: float | None = None
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    evicted_lru: int = 0
    evicted_idle: int = 0
    _seen: dict[str, float] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.tails, OrderedDict):
            self.tails = OrderedDict(self.tails)
        if self.max_entities is not None and self.max_entities < 1:
            raise ValueError(f"max_entities must be at least 1, got {self.max_entities}")
        if self.idle_ttl is not None and self.idle_ttl <= 0:
            raise ValueError(f"idle_ttl must be positive, got {self.idle_ttl}")

    def __len__(self) -> int:
        return len(self.tails)

    def expire(self, now: float | None = None) -> int:
        """Forget entities idle for longer than ``idle_ttl``; returns how many were forgotten."""
        if self.idle_ttl is None or not self.tails:
            return 0
        now = self.clock() if now is None else now
        limit = now - self.idle_ttl
        gone = 0
        while self.tails:
            ent = next(iter(self.tails))          # least recently seen first
            if self._seen.get(ent, now) > limit:
                break
            del self.tails[ent]
            self._seen.pop(ent, None)
            gone += 1
        self.evicted_idle += gone
        return gone

    def _touch(self, entities) -> None:
        bounded = self.max_entities is not None or self.idle_ttl is not None
        if not bounded:
            return
        now = self.clock()
        for ent in entities:
            if ent in self.tails:
                self.tails.move_to_end(ent)
                self._seen[ent] = now
        self.expire(now)
        if self.max_entities is not None:
            while len(self.tails) > self.max_entities:
                ent, _ = self.tails.popitem(last=False)
                self._seen.pop(ent, None)
                self.evicted_lru += 1

    def windows(self, X: np.ndarray, entities: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Extend with a chunk; return (matrix, idx) where idx (n_chunk, T) indexes `matrix`.

        `entities` are the chunk's entity keys (strings), `order` the chunk's within-chunk
        record order (from `window_order`). Rows of `matrix` are the carried history followed by X.
        """
        T = self.sequence_length
        keep = T - 1
        self.expire()
        uniq, codes = np.unique(entities, return_inverse=True)
        hist_rows, hist_codes = [], []
        for code, ent in enumerate(uniq):
            tail = self.tails.get(ent)
            if tail is not None and len(tail):
                hist_rows.append(tail)
                hist_codes.append(np.full(len(tail), code))
        n_hist = sum(len(h) for h in hist_rows)
        matrix = np.concatenate(hist_rows + [X], axis=0) if hist_rows else X
        all_codes = np.concatenate(hist_codes + [codes]) if hist_codes else codes
        all_order = np.concatenate([np.arange(n_hist), order + n_hist]) if n_hist else order
        # stable grouping: history first (already in time order), then the chunk's order
        grouped = all_order[np.argsort(all_codes[all_order], kind="stable")]
        idx = windows_by_entity(all_codes, grouped, T)[n_hist:]
        if keep > 0:
            sorted_codes = all_codes[grouped]
            bounds = np.r_[0, np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1, len(grouped)]
            for a, b in zip(bounds[:-1], bounds[1:]):
                rows = grouped[max(a, b - keep):b]
                self.tails[uniq[sorted_codes[a]]] = matrix[rows].copy()
            self._touch(uniq.tolist())
        return matrix, idx
