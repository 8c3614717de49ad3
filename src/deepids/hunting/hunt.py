"""Threat hunting: rank entity windows, processes or process trees by the anomaly of their events, with evidence.

`by="host"` or `"user"`: one finding per entity and time window. `by="process"` or `"tree"`: one
finding per process (all events of one process, `process` column) or per process tree (a process
and its descendants below a long-lived parent such as explorer.exe or services.exe,
`process_tree` column) in each time window (`window=None`: over its whole life); both columns come
from `EventContext` (models trained with process-tree context add them to the events they
score). A tree holds one attack chain (wscript.exe -> powershell.exe -> cmd.exe) and nothing else
of a busy host; windowing it splits a long-lived agent's activity into the sessions an analyst reads.

A window is one entity (host or user) over one fixed time slot (5 minutes by default). Its score
is the mean of its `top_k` highest event scores (fewer when it has fewer events): a window stands
out when it holds several unusual events, while one odd event in a busy window does not drown in
thousands of ordinary ones. `top_features` sums the per-feature errors of those events; `evidence`
lists the finding's most anomalous events, the highest-scored event of each kind (channel and
event id) first, then the next highest (`evidence_rows`): ten copies of one registry write do not
hide the process's PowerShell or network events; `window_counts` gives the window's behaviour counts (`entity_windows`: events, distinct
processes and users, failed logons, processes created, encoded commands, ...) as context. ATT&CK labels (for example from OTRF's INDEX.csv) can be attached to findings for the
analyst and for evaluation; they never enter a score.

Findings are ranked by score (`rank_windows`). Scores closer than the model's resolution are a
tie: a rarity model's event score moves by log10(2) when one of its keys goes from never seen in
training to seen once, so a window (mean of `top_k` events) by log10(2) / top_k; smaller
differences are not evidence (models without a declared resolution tie only on equal scores).
Among tied findings, one that opens a new incident comes first: an incident is one host (one user
for `by="user"`) over a contiguous time, so a finding whose time span overlaps or touches that of a
higher-ranked finding on the same host continues it and comes after the new ones. An analyst
reading the top 20 sees twenty separate things before the second window of one of them.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import polars as pl

from deepids.errors import ConfigError
from deepids.features.events import entity_windows, parse_window, window_starts

EVIDENCE_FIELDS = ("timestamp", "record_id", "event_id", "channel", "user", "image", "parent_image", "command_line")
_CMD_SHOWN = 600


@dataclass
class HuntResult:
    findings: list[dict]
    windows: pl.DataFrame                      # every window: entity, window_start, window_end, score, events
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        timeline = {}
        for entity, start, score in self.windows.select(["entity", "window_start", "score"]).iter_rows():
            timeline.setdefault(entity, []).append([_iso(start), round(float(score), 6)])
        return {"summary": self.summary, "findings": self.findings, "timeline": timeline}

    def write_json(self, path) -> None:
        from deepids.atomic import write_text

        write_text(path, json.dumps(self.to_dict(), indent=2, default=str) + "\n")   # whole or not at all


class HeldEvents:
    """Canonical fields of events, looked up by their row number in the input: every event (`rows`
    None: row i is event i), or only some, `rows` giving each one's row number (ascending)."""

    def __init__(self, frame: pl.DataFrame, rows: np.ndarray | None = None):
        self.frame = frame
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.columns = frame.columns

    def take(self, rows, columns: list[str] | None = None) -> pl.DataFrame:
        """The events of these row numbers, in the order given (only `columns`, when given)."""
        rows = np.asarray(rows, dtype=np.int64)
        frame = self.frame if columns is None else self.frame.select(columns)
        if self.rows is None:
            return frame[rows.tolist()]
        if np.array_equal(rows, self.rows):
            return frame                       # every event held, in order: no copy
        pos = np.searchsorted(self.rows, rows)
        if len(rows) and (pos.max() >= len(self.rows) or not np.array_equal(self.rows[pos], rows)):
            raise ValueError("rows asked for that were not kept")
        return frame[pos.tolist()]


def evidence_rows(events: pl.DataFrame | HeldEvents, rows: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    """The `n` events of a finding shown as evidence, in the order shown: by score, the
    highest-scored event of each kind (channel, event id) first, then the rest by score."""
    rows = np.asarray(rows, dtype=np.int64)
    order = rows[np.argsort(-score[rows], kind="stable")]
    if n <= 0 or not len(order):
        return order[:0]
    head = order[:2000]                   # the kinds among a finding's 2,000 highest-scored events
    held = events if isinstance(events, HeldEvents) else HeldEvents(events)
    sub = held.take(head, ["channel", "event_id"])
    kinds = list(zip(sub.get_column("channel").to_list(), sub.get_column("event_id").to_list()))
    seen: set = set()
    first = []
    for i, kind in enumerate(kinds):
        if kind not in seen:
            seen.add(kind)
            first.append(i)
            if len(first) == n:
                break
    picked = set(first)
    chosen = (first + [i for i in range(min(len(order), 2 * n)) if i not in picked])[:n]
    return order[np.array(chosen, dtype=np.int64)]


def _tree_processes(events: HeldEvents, rows: np.ndarray, shown: int = 10) -> list[dict]:
    """The processes of a tree finding, in order of first appearance: name, image, parent, command line."""
    if "process" not in events.columns:
        return []
    sub = events.take(np.sort(rows), ["process", "image", "parent_image", "command_line"])
    out = []
    for name, group in sub.group_by("process", maintain_order=True):
        first = group.row(0, named=True)
        cmd = group.get_column("command_line").drop_nulls()
        cmd = cmd[0] if cmd.len() else None
        out.append({"process": name[0], "image": group.get_column("image").drop_nulls().first(),
                    "parent_image": group.get_column("parent_image").drop_nulls().first() or first["parent_image"],
                    "command_line": (cmd[:_CMD_SHOWN] + "…") if cmd and len(cmd) > _CMD_SHOWN else cmd,
                    "events": group.height})
        if len(out) >= shown:
            break
    return out


def _iso(t) -> str | None:
    return None if t is None else t.isoformat(timespec="milliseconds") if hasattr(t, "isoformat") else str(t)


def window_scores(events: pl.DataFrame, scores: np.ndarray, by: str = "host", window: str | timedelta = "5m",
                  top_k: int = 10) -> pl.DataFrame:
    """One row per (entity, window): score (mean of the top_k event scores), events, and the row ids inside."""
    if by not in ("host", "user"):
        raise ConfigError(f"hunt by 'host' or 'user', got {by!r}")
    if top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}")
    td = parse_window(window)
    df = (events.select([by, "timestamp"]).with_row_index("_row")
          .with_columns(pl.Series("_score", np.asarray(scores, dtype=np.float64)))
          .filter(pl.col(by).is_not_null() & pl.col("timestamp").is_not_null() & pl.col("_score").is_finite()))
    df = df.with_columns(window_starts(df, td))
    out = (df.sort("_score", descending=True)
           .group_by([by, "window_start"])
           .agg(pl.col("_score").head(top_k).mean().alias("score"), pl.len().alias("events"),
                pl.col("_score").max().alias("max_event_score"), pl.col("_row").alias("rows"))
           .rename({by: "entity"})
           .with_columns((pl.col("window_start") + td).alias("window_end"))
           .sort(["entity", "window_start"]))
    return out.select(["entity", "window_start", "window_end", "score", "max_event_score", "events", "rows"])


GROUPS = {"process": "process", "tree": "process_tree"}


def group_scores(events: pl.DataFrame, scores: np.ndarray, by: str = "tree", top_k: int = 10,
                 window: str | timedelta | None = "5m") -> pl.DataFrame:
    """One row per process or process tree and time window (the whole life of each when `window` is None):
    score (mean of the top_k event scores), events, window start and end, host, and the row ids inside."""
    column = GROUPS.get(by)
    if column is None:
        raise ConfigError(f"group events by 'process' or 'tree', got {by!r}")
    if column not in events.columns:
        raise ConfigError(f"hunting by {by} needs a model trained with process-tree context (its events carry "
                          f"`{column}`); retrain the model with this version")
    if top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}")
    df = (events.select([column, "host", "timestamp"]).with_row_index("_row")
          .with_columns(pl.Series("_score", np.asarray(scores, dtype=np.float64)))
          .filter(pl.col(column).is_not_null() & pl.col("_score").is_finite()))
    keys = [column]
    if window is not None:
        td = parse_window(window)
        df = df.filter(pl.col("timestamp").is_not_null())
        df = df.with_columns(window_starts(df, td))
        keys.append("window_start")
    out = (df.sort("_score", descending=True)
           .group_by(keys)
           .agg(pl.col("_score").head(top_k).mean().alias("score"), pl.len().alias("events"),
                pl.col("_score").max().alias("max_event_score"), pl.col("_row").alias("rows"),
                pl.col("timestamp").min().alias("first_event"), pl.col("timestamp").max().alias("last_event"),
                pl.col("host").first().alias("host"))
           .rename({column: "entity"}))
    if window is None:
        out = out.with_columns(pl.col("first_event").alias("window_start"), pl.col("last_event").alias("window_end"))
    else:
        out = out.with_columns((pl.col("window_start") + td).alias("window_end"))
    return out.sort(["entity", "window_start"]).select(
        ["entity", "window_start", "window_end", "score", "max_event_score", "events", "rows", "host"])


def rank_windows(windows: pl.DataFrame, tolerance: float = 0.0, limit: int | None = None) -> pl.DataFrame:
    """`windows` (of `window_scores` or `group_scores`) in the order `hunt` ranks them (module docstring).

    Score, highest first; a tie group is the findings whose score is within `tolerance` of the
    group's highest; inside it, findings that open a new incident (no higher-ranked finding on the
    same `host`, or the same `entity` where there is no host column, with an overlapping or touching
    time span) come first, then the continuations; each part by score, entity name and window start.
    Only the first `limit` places are tie-broken; the rest follow in score order.
    """
    if not tolerance >= 0:
        raise ConfigError(f"the tie tolerance must be a number >= 0, got {tolerance!r}")
    order = windows.sort(["score", "entity", "window_start"], descending=[True, False, False], nulls_last=True)
    n = order.height
    limit = n if limit is None else min(limit, n)
    score = order.get_column("score").to_numpy()
    hosts = order.get_column("host" if "host" in order.columns else "entity").to_list()
    starts, ends = order.get_column("window_start").to_list(), order.get_column("window_end").to_list()
    placed: dict = {}                 # host -> sorted [(start, end)] of the findings ranked so far
    longest: dict = {}                # host -> its longest span, to bound the search
    picked: list[int] = []
    i = 0
    while i < n and len(picked) < limit:
        j = i + 1
        while j < n and score[i] - score[j] <= tolerance:
            j += 1
        new, continued = [], []
        for k in range(i, j):
            (continued if _continues(placed, longest, hosts[k], starts[k], ends[k]) else new).append(k)
            if len(picked) + len(new) >= limit:
                break
        picked += new + continued
        i = j
    taken = set(picked)
    picked += [k for k in range(n) if k not in taken]
    return order[picked]


def _span_start(span: tuple):
    return span[0]


def _continues(placed: dict, longest: dict, host, start, end) -> bool:
    """Whether [start, end] overlaps or touches a span already placed on `host`; places it."""
    if host is None or start is None or end is None:
        return False
    spans = placed.setdefault(host, [])
    reach = longest.get(host)
    hit = False
    if reach is not None:
        lo = bisect.bisect_left(spans, start - reach, key=_span_start)
        hi = bisect.bisect_right(spans, end, key=_span_start)
        hit = any(s <= end and start <= e for s, e in spans[lo:hi])
    bisect.insort(spans, (start, end), key=_span_start)
    longest[host] = max(reach, end - start) if reach is not None else end - start
    return hit


def check_hunt_options(by: str, top: int, top_k: int, window) -> None:
    """The options a hunt refuses (`run_hunt` checks them before it reads anything)."""
    if by not in ("host", "user", *GROUPS):
        raise ConfigError(f"hunt by 'host', 'user', 'process' or 'tree', got {by!r}")
    if top < 1:
        raise ConfigError(f"--top must be at least 1, got {top}")
    if top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}")
    if window is not None:
        parse_window(window)


def rank_findings(events: pl.DataFrame, score: np.ndarray, *, by: str = "host", window: str | timedelta = "5m",
                  top: int = 20, top_k: int = 10, score_resolution: float = 0.0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(every window, the first `top` of them in ranked order) from the events' ranking columns alone:
    `by` (or `process_tree`/`process` and `host`) and `timestamp` (`window_scores`, `group_scores`)."""
    check_hunt_options(by, top, top_k, window)
    windows = (group_scores(events, score, by=by, top_k=top_k, window=window) if by in GROUPS
               else window_scores(events, score, by=by, window=window, top_k=top_k))
    if not score_resolution >= 0:
        raise ConfigError(f"score_resolution must be a number >= 0, got {score_resolution!r}")
    return windows, rank_windows(windows, tolerance=score_resolution / top_k, limit=top).head(top)


def rows_described(ranked: pl.DataFrame) -> np.ndarray:
    """The row numbers whose canonical fields `describe_findings` reads: every event of each ranked
    finding (its window's counts, its tree's processes, its labels, its evidence), ascending."""
    if not ranked.height:
        return np.empty(0, dtype=np.int64)
    return np.unique(np.asarray(ranked.get_column("rows").explode().drop_nulls().to_numpy(), dtype=np.int64))


def describe_findings(ranked: pl.DataFrame, events: HeldEvents, score: np.ndarray, feature_error, feature_names,
                      *, by: str = "host", window: str | timedelta = "5m", top_k: int = 10, evidence: int = 10,
                      n_features: int = 5, attack_labels: dict[str, str] | None = None) -> list[dict]:
    """The findings of the ranked windows: top features, window counts, evidence, a tree's processes,
    labels. `events` holds the canonical fields of at least `rows_described(ranked)`; `feature_error`
    is indexed by row number (an array or a memory map)."""
    grouped = by in GROUPS
    names = list(feature_names)
    findings = []
    for rank, row in enumerate(ranked.iter_rows(named=True), start=1):
        rows = np.asarray(row["rows"], dtype=np.int64)
        order = rows[np.argsort(-score[rows], kind="stable")]
        top_rows = order[:top_k]
        features = []
        if feature_error is not None and len(names):
            contrib = np.asarray(feature_error[top_rows]).sum(axis=0)
            total = float(contrib.sum()) or 1.0
            for j in np.argsort(-contrib)[:n_features]:
                features.append({"feature": names[j], "share": round(float(contrib[j]) / total, 4)})
        shown = evidence_rows(events, rows, score, evidence)
        finding = {"rank": rank, "entity": row["entity"], "entity_type": by,
                   "window_start": _iso(row["window_start"]), "window_end": _iso(row["window_end"]),
                   "score": round(float(row["score"]), 6), "events": int(row["events"]),
                   "top_features": features,
                   "window_counts": {} if grouped else _window_counts(events, rows, row, by=by, window=window),
                   "evidence": _evidence(events.take(shown), score[shown])}
        if grouped:
            finding["host"] = row["host"]
            finding["processes"] = _tree_processes(events, rows)
        if attack_labels and "source_file" in events.columns:
            files = events.take(rows, ["source_file"]).get_column("source_file").drop_nulls().unique().sort().to_list()
            finding["attack_labels"] = sorted({attack_labels[f] for f in files if f in attack_labels})
        findings.append(finding)
    return findings


def _window_counts(events: HeldEvents, rows: np.ndarray, row: dict, *, by: str, window) -> dict:
    """The behaviour counts of a ranked window (`entity_windows` of its events; context for the
    analyst, not part of the score), one window at a time."""
    for r in entity_windows(events.take(np.sort(rows)), by=by, window=window).iter_rows(named=True):
        if (r.pop("entity"), r.pop("window_start")) == (row["entity"], row["window_start"]):
            return {k: v for k, v in r.items() if k != "window_end" and v}
    return {}


def _evidence(ev_rows: pl.DataFrame, scores: np.ndarray) -> list[dict]:
    evidence_list = []
    for r, s in zip(ev_rows.iter_rows(named=True), scores):
        item = {k: r.get(k) for k in EVIDENCE_FIELDS}
        item["timestamp"] = _iso(item["timestamp"])
        if item["command_line"] and len(item["command_line"]) > _CMD_SHOWN:
            item["command_line"] = item["command_line"][:_CMD_SHOWN] + "…"
        item["host"] = r.get("host")
        item["score"] = round(float(s), 6)
        evidence_list.append(item)
    return evidence_list


def hunt_summary(windows: pl.DataFrame, score: np.ndarray, *, by: str, window, top_k: int,
                 score_resolution: float) -> dict:
    """The summary of a hunt over `len(score)` events and their `windows`."""
    n = len(score)
    return {"entity_type": by, "window": None if window is None else str(parse_window(window)),
            "windows": windows.height,
            "events": n, "events_scored": int(np.isfinite(score).sum()),
            # events with no host/user or no timestamp belong to no window: counted, not dropped silently
            "events_in_no_window": n - (int(windows.get_column("events").sum()) if windows.height else 0),
            "entities": int(windows.get_column("entity").n_unique()) if windows.height else 0,
            "window_score": f"mean of the top {top_k} event scores",
            "ties": (f"window scores within {score_resolution / top_k:.4g}: a new host and time before the "
                     "continuation of a higher finding" if score_resolution else
                     "equal window scores: a new host and time before the continuation of a higher finding")}


def hunt(events: pl.DataFrame, scores, *, by: str = "host", window: str | timedelta = "5m", top: int = 20,
         top_k: int = 10, evidence: int = 10, n_features: int = 5,
         attack_labels: dict[str, str] | None = None, score_resolution: float = 0.0) -> HuntResult:
    """Ranked findings from events held whole and their `Scores` (as a detector's `score_records` returns).

    `attack_labels` maps an event's `source_file` to a label shown beside the findings (never scored).
    `score_resolution`: the smallest event-score difference the model resolves (log10(2) for
    `event-rarity`: `deepids.models.rarity.SCORE_RESOLUTION`); window scores closer than it / `top_k`
    are tied (`rank_windows`). `deepids hunt` ranks and describes the same way without holding the
    events (`deepids.hunting.commands.run_hunt`).
    """
    score = np.asarray(scores.score, dtype=np.float64)
    windows, ranked = rank_findings(events, score, by=by, window=window, top=top, top_k=top_k,
                                    score_resolution=score_resolution)
    findings = describe_findings(ranked, HeldEvents(events), score, scores.feature_error, scores.feature_names,
                                 by=by, window=window, top_k=top_k, evidence=evidence, n_features=n_features,
                                 attack_labels=attack_labels)
    summary = hunt_summary(windows, score, by=by, window=window, top_k=top_k, score_resolution=score_resolution)
    return HuntResult(findings=findings, windows=windows.drop("rows"), summary=summary)
