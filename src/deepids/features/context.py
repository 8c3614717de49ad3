"""Entity context: what a source host has been doing, as features of each of its records.

For each record, from the records of the same entity (the source address) that came before it
and the record itself:

* ``ctx_gap`` — seconds since the entity's previous record (for its first: the fitted
  ``gap_fill_``, the largest gap seen in training, at least ``window_seconds``);
* ``ctx_same_dst_ip``, ``ctx_same_dst_port`` — 1 when the previous record went to the same
  destination address / port (the three inter-flow columns of ``lab/compare.py``);
* ``ctx_flows_window``, ``ctx_dst_ips_window``, ``ctx_dst_ports_window`` — records, distinct
  destination addresses and distinct destination ports in the last ``window_seconds`` (as
  UNSW-NB15's ``ct_*`` and KDD's ``count``/``srv_count`` features do);
* ``ctx_dst_ports_last``, ``ctx_same_dst_port_last``, ``ctx_same_dst_ip_last`` — distinct
  destination ports among the last ``last_flows`` records, and the share of them that went to
  this record's destination port / address;
* ``ctx_gap_mean_last``, ``ctx_gap_std_last`` — inter-arrival mean and deviation over them;
* ``ctx_failed_last`` — the share of them that failed: no reply packet, or a reset (Zeek
  states ``S0``/``REJ``/``RSTO*``/``RSTR*``/``SH*``, nfdump's or Suricata's RST flag, CIC's
  ``RST Flag Count``).

Records are taken in the order they arrive (the file's order, a stream's order), so a file
scored at once, in chunks, or streamed record by record gets the same values: the state
carried between chunks is :class:`ContextState`. It is bounded: an entity not seen for
``idle_ttl`` seconds of *record time* is forgotten, and at most ``max_entities`` are kept (the
least recently seen goes first); both bounds are part of the fitted step, so every path
forgets alike. An entity that comes back starts afresh, like a new one.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from deepids.errors import ConfigError, SchemaError

CONTEXT_FEATURES: tuple[str, ...] = (
    "ctx_gap", "ctx_same_dst_ip", "ctx_same_dst_port", "ctx_flows_window", "ctx_dst_ips_window",
    "ctx_dst_ports_window", "ctx_dst_ports_last", "ctx_same_dst_port_last", "ctx_same_dst_ip_last",
    "ctx_gap_mean_last", "ctx_gap_std_last", "ctx_failed_last",
)
ZEEK_FAILED = frozenset({"S0", "REJ", "RSTO", "RSTOS0", "RSTR", "RSTRH", "SH", "SHR"})
MAX_WINDOW_RECORDS = 5_000       # a flood of one entity keeps at most this many records in its time window


class _Entity:
    """One entity's recent records: the last ``k`` (with running counts and sums, so each new
    record costs O(1)) and those within the time window."""

    __slots__ = ("last", "last_ips", "last_ports", "gap_sum", "gap_sq", "gap_n", "failed",
                 "window", "ips", "ports", "last_t", "prev")

    def __init__(self, k: int):
        self.last: deque = deque()              # (dst_ip, dst_port, failed, gap or None)
        self.last_ips: Counter = Counter()
        self.last_ports: Counter = Counter()
        self.gap_sum = self.gap_sq = 0.0
        self.gap_n = 0
        self.failed = 0
        self.window: deque = deque()            # (t, dst_ip, dst_port)
        self.ips: Counter = Counter()
        self.ports: Counter = Counter()
        self.last_t: float | None = None
        self.prev: tuple | None = None

    def push_last(self, k: int, ip, port, failed: bool, gap: float | None) -> None:
        if len(self.last) >= k:
            o_ip, o_port, o_failed, o_gap = self.last.popleft()
            _drop(self.last_ips, o_ip)
            _drop(self.last_ports, o_port)
            self.failed -= o_failed
            if o_gap is not None:
                self.gap_sum -= o_gap
                self.gap_sq -= o_gap * o_gap
                self.gap_n -= 1
        self.last.append((ip, port, failed, gap))
        self.last_ips[ip] += 1
        self.last_ports[port] += 1
        self.failed += failed
        if gap is not None:
            self.gap_sum += gap
            self.gap_sq += gap * gap
            self.gap_n += 1


@dataclass
class ContextState:
    """Per-entity state carried from chunk to chunk (bounded, see the module docstring)."""

    max_entities: int | None
    idle_ttl: float | None
    entities: OrderedDict = field(default_factory=OrderedDict)
    now: float = float("-inf")            # the latest record time seen
    evicted_lru: int = 0
    evicted_idle: int = 0

    def __len__(self) -> int:
        return len(self.entities)

    def touch(self, key, k: int) -> _Entity:
        ent = self.entities.get(key)
        if ent is None:
            ent = self.entities[key] = _Entity(k)
            if self.max_entities is not None and len(self.entities) > self.max_entities:
                self.entities.popitem(last=False)
                self.evicted_lru += 1
        else:
            self.entities.move_to_end(key)
        return ent

    def expire(self) -> None:
        if self.idle_ttl is None:
            return
        limit = self.now - self.idle_ttl
        while self.entities:
            key, ent = next(iter(self.entities.items()))
            if ent.last_t is None or ent.last_t >= limit:
                break
            del self.entities[key]
            self.evicted_idle += 1


@dataclass
class EntityContext:
    """The fitted entity-context step (see the module docstring); saved as JSON with the model."""

    window_seconds: float = 60.0
    last_flows: int = 20
    entity: str = "src_ip"
    max_entities: int | None = 100_000
    idle_ttl: float | None = 3600.0
    gap_fill_: float | None = None
    failed_columns_: list[str] | None = None     # what tells a failed record, as the training data had it

    def __post_init__(self) -> None:
        if self.window_seconds <= 0 or self.last_flows < 1:
            raise ConfigError("entity context needs window_seconds > 0 and last_flows >= 1")

    # ------------------------------------------------------------------ fit
    def fit(self, table: pl.DataFrame) -> "EntityContext":
        """Learn the gap given to an entity's first record: the largest gap in training (at
        least the window), so a host new to the model looks like a host back from a pause."""
        self.gap_fill_ = None
        self.failed_columns_ = [c for c in FAILED_COLUMNS if c in table.columns]
        ctx = self.transform(table, self.new_state())
        gaps = ctx["ctx_gap"].to_numpy()
        seen = gaps[np.isfinite(gaps)]
        self.gap_fill_ = float(max(self.window_seconds, seen.max() if seen.size else 0.0))
        return self

    def new_state(self) -> ContextState:
        return ContextState(self.max_entities, self.idle_ttl)

    # ------------------------------------------------------------ transform
    def transform(self, table: pl.DataFrame, state: ContextState) -> pl.DataFrame:
        """``table`` with the context columns added, records taken in row order; ``state`` is updated."""
        n = table.height
        rows: list[tuple] = []
        if n:
            # without a time, only the last-records features carry information; without an
            # entity column, the whole input is one entity
            t = (table["timestamp"].dt.epoch("us").cast(pl.Float64).fill_null(float("nan")).to_numpy() / 1e6
                 if "timestamp" in table.columns else np.full(n, np.nan))
            keys = (table[self.entity].cast(pl.Utf8).fill_null("").to_list() if self.entity in table.columns
                    else [""] * n)
            ips = table["dst_ip"].cast(pl.Utf8).to_list() if "dst_ip" in table.columns else [None] * n
            ports = table["dst_port"].to_list() if "dst_port" in table.columns else [None] * n
            failed = failed_mask(table, self.failed_columns_).tolist()
            fill = np.nan if self.gap_fill_ is None else self.gap_fill_
            t = t.tolist()
            one = self._one
            rows = [one(state, keys[i], t[i], ips[i], ports[i], failed[i], fill) for i in range(n)]
        out = np.asarray(rows, dtype=np.float64).reshape(n, len(CONTEXT_FEATURES))
        return table.with_columns([pl.Series(name, out[:, j]) for j, name in enumerate(CONTEXT_FEATURES)])

    def _one(self, state: ContextState, key, t: float, ip, port, failed: bool, fill: float) -> tuple:
        if t != t:
            t = state.now if state.now != float("-inf") else 0.0
        if t > state.now:
            state.now = t
        state.expire()
        ent = state.touch(key, self.last_flows)
        if ent.last_t is None:
            gap, same_ip, same_port = fill, 0.0, 0.0
        else:
            gap = max(0.0, t - ent.last_t)
            same_ip, same_port = float(ent.prev[0] == ip), float(ent.prev[1] == port)
        horizon = max(t, ent.last_t if ent.last_t is not None else t) - self.window_seconds
        window = ent.window
        while window and (window[0][0] < horizon or len(window) >= MAX_WINDOW_RECORDS):
            _, old_ip, old_port = window.popleft()
            _drop(ent.ips, old_ip)
            _drop(ent.ports, old_port)
        window.append((t, ip, port))
        ent.ips[ip] += 1
        ent.ports[port] += 1
        ent.push_last(self.last_flows, ip, port, failed, gap if ent.last_t is not None else None)
        ent.last_t = t if ent.last_t is None or t > ent.last_t else ent.last_t
        ent.prev = (ip, port)
        k = len(ent.last)
        if ent.gap_n:
            mean = ent.gap_sum / ent.gap_n
            std = max(0.0, ent.gap_sq / ent.gap_n - mean * mean) ** 0.5
        else:
            mean, std = fill, 0.0
        return (gap, same_ip, same_port, float(len(window)), float(len(ent.ips)), float(len(ent.ports)),
                float(len(ent.last_ports)), ent.last_ports[port] / k, ent.last_ips[ip] / k, mean, std,
                ent.failed / k)

    # -------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EntityContext":
        return cls(**{k: d[k] for k in ("window_seconds", "last_flows", "entity", "max_entities", "idle_ttl",
                                        "gap_fill_", "failed_columns_") if k in d})

    @property
    def input_columns(self) -> list[str]:
        """The columns the step reads."""
        return ["timestamp", self.entity, "dst_ip", "dst_port", *(self.failed_columns_ or [])]


def _drop(counter: Counter, key) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


FAILED_COLUMNS = ("dst_packets", "Total Backward Packets", "state", "flag_rst", "tcp_rst", "RST Flag Count")


def failed_mask(table: pl.DataFrame, columns: list[str] | None = None) -> np.ndarray:
    """Records that failed: no reply packet, or a reset seen (whichever the source can tell);
    ``columns``: those of :data:`FAILED_COLUMNS` to use (default: those present)."""
    n = table.height
    failed = np.zeros(n, dtype=bool)
    cols = [c for c in (FAILED_COLUMNS if columns is None else columns)]
    missing = [c for c in cols if c not in table.columns]
    if columns is not None and missing:
        raise SchemaError(f"entity context needs the columns {', '.join(missing)}")
    for reply in ("dst_packets", "Total Backward Packets"):
        if reply in cols:
            failed |= table[reply].fill_null(0).fill_nan(0).to_numpy() == 0
    if "state" in cols and table.schema["state"] == pl.Utf8:
        failed |= table["state"].is_in(list(ZEEK_FAILED)).fill_null(False).to_numpy()
    for rst in ("flag_rst", "tcp_rst", "RST Flag Count"):
        if rst in cols:
            failed |= table[rst].fill_null(0).fill_nan(0).to_numpy() > 0
    return failed
