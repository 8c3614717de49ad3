"""Features of Windows events: per event, and per entity and time window.

Per event (`event_features`), stateless: what the canonical table says, put in the shape a model
reads. Categorical columns stay strings (`event` = channel/event id, logon type, process and
parent image base names, user, user kind); the model's fitted pipeline
(:class:`~deepids.features.preprocess.FlowPreprocessor`) one-hot encodes them with vocabularies
fitted on training data only plus an "unseen" slot, and saves the vocabularies in the model's
JSON. Numeric columns describe the command line (length, Shannon entropy, share of special
characters, share of upper case, an encoded-command marker, longest base64-like token) and a few
flags (failed, network logon, process started from a user-writable folder).

Per entity and window (`entity_windows`), for behaviour analytics: for each host or user in each
window (5 minutes by default), counts of events and of the common event kinds, distinct event
ids, processes, parents, process-parent pairs, users and logon types, failed logons, network
logons, processes created, encoded commands; and, given the pairs seen in training, how many
process-parent pairs are new.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from datetime import timedelta

import numpy as np
import polars as pl

from deepids.errors import ConfigError, ModelFormatError, SchemaError
from deepids.features.baselines import RARITY_COLUMNS, RarityCounts, RarityTables, rarity_keys
from deepids.features.process_tree import (CONTEXT_CATEGORICAL, CONTEXT_NUMERIC, ProcessTable, command_shape,
                                           process_context, raw_context_fields)

EVENT_CATEGORICAL = ("event", "logon_type", "image", "parent_image", "user", "user_kind")
EVENT_NUMERIC = ("cmd_length", "cmd_entropy", "cmd_special_share", "cmd_upper_share", "cmd_encoded",
                 "cmd_longest_token", "failed", "network_logon", "user_writable_image")
EVENT_FEATURES = EVENT_CATEGORICAL + EVENT_NUMERIC
# the canonical columns a log model reads; they mark a model as a log model
LOG_INPUT_MARKER = "event"

_CHANNEL_SHORT = {
    "Microsoft-Windows-Sysmon/Operational": "sysmon",
    "Security": "security",
    "Windows PowerShell": "powershell",
    "Microsoft-Windows-PowerShell/Operational": "powershell-op",
    "System": "system",
}
_ENCODED = re.compile(r"(?i)(?:^|\s)[-/]e(?:nc|ncodedcommand|c)?\b|frombase64string")
_B64 = re.compile(r"[A-Za-z0-9+/=]{20,}")
_USER_WRITABLE = re.compile(r"(?i)\\(users|temp|appdata|programdata|perflogs)\\|\\windows\\temp\\")
_SYSTEM_USERS = {"system", "local service", "network service", "anonymous logon", "dwm-1", "dwm-2", "umfd-0",
                 "umfd-1", "umfd-2"}


def base_name(path: str | None) -> str | None:
    """`C:\\Windows\\System32\\cmd.exe` -> `cmd.exe` (lower case)."""
    if path is None:
        return None
    return re.split(r"[\\/]", str(path).strip().strip('"'))[-1].lower() or None


def user_kind(user: str | None) -> str:
    if user is None:
        return "none"
    if user.endswith("$"):
        return "machine"
    if user in _SYSTEM_USERS or user.startswith(("dwm-", "umfd-")):
        return "system"
    return "person"


def command_line_stats(cmd: str | None) -> tuple[float, float, float, float, float, float]:
    """(length, entropy in bits per character, share of special characters, share of upper case,
    encoded-command marker 0/1, longest base64-like token)."""
    if not cmd:
        return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    n = len(cmd)
    counts = Counter(cmd)
    entropy = -sum(c / n * math.log2(c / n) for c in counts.values())
    special = sum(c for ch, c in counts.items() if not (ch.isalnum() or ch.isspace())) / n
    upper = sum(c for ch, c in counts.items() if ch.isupper()) / n
    encoded = 1.0 if _ENCODED.search(cmd) else 0.0
    longest = max((len(m) for m in _B64.findall(cmd)), default=0)
    return float(n), entropy, special, upper, encoded, float(longest)


def event_features(events: pl.DataFrame) -> pl.DataFrame:
    """One row of model inputs per event, in input order (strings for categories, floats for the rest)."""
    missing = [c for c in ("channel", "event_id", "image", "parent_image", "user", "logon_type", "command_line",
                           "outcome") if c not in events.columns]
    if missing:
        raise SchemaError(f"not a canonical event table: missing {', '.join(missing)} (read it with read_events)")
    channel = events.get_column("channel").fill_null("?").to_list()
    event_id = events.get_column("event_id").to_list()
    event = [f"{_CHANNEL_SHORT.get(c, c.lower())}/{e}" for c, e in zip(channel, event_id)]
    images = events.get_column("image").to_list()
    users = events.get_column("user").to_list()
    stats = np.array(_per_distinct(command_line_stats, events.get_column("command_line").to_list()),
                     dtype=np.float64).reshape(-1, 6)
    logon = events.get_column("logon_type").to_list()
    out = pl.DataFrame({
        "event": event,
        "logon_type": [("none" if v is None else str(v)) for v in logon],
        "image": [v or "none" for v in _per_distinct(base_name, images)],
        "parent_image": [v or "none" for v in _per_distinct(base_name, events.get_column("parent_image").to_list())],
        "user": [u or "none" for u in users],
        "user_kind": [user_kind(u) for u in users],
        "cmd_length": stats[:, 0], "cmd_entropy": stats[:, 1], "cmd_special_share": stats[:, 2],
        "cmd_upper_share": stats[:, 3], "cmd_encoded": stats[:, 4], "cmd_longest_token": stats[:, 5],
        "failed": (events.get_column("outcome") == "failure").fill_null(False).cast(pl.Float64),
        "network_logon": pl.Series([1.0 if v in (3, 10) else 0.0 for v in logon], dtype=pl.Float64),
        "user_writable_image": pl.Series(_per_distinct(lambda v: 1.0 if (v and _USER_WRITABLE.search(v)) else 0.0,
                                                       images), dtype=pl.Float64),
    }, schema={**{c: pl.Utf8 for c in EVENT_CATEGORICAL}, **{c: pl.Float64 for c in EVENT_NUMERIC}})
    if "label" in events.columns:
        out = out.with_columns(events.get_column("label"))
    return out


CONTEXT_FEATURES = CONTEXT_CATEGORICAL + CONTEXT_NUMERIC + RARITY_COLUMNS


class EventContext:
    """Process-tree context and rarity of events, fitted on training events, carried across chunks.

    `fit(events)` follows the training events' processes (:mod:`deepids.features.process_tree`)
    and counts their rarity keys (:mod:`deepids.features.baselines`). `features(events)` gives
    `event_features` plus the context and rarity columns (:data:`CONTEXT_FEATURES`); its process
    table is carried from one call to the next, so scoring a file in one go, chunk by chunk or
    event by event gives the same features (`reset()` starts a new table). Its fitted state is
    `to_dict()`, saved in the model's JSON (`feature_context`).
    """

    def __init__(self, tables: RarityTables | None = None, max_processes: int = 200_000):
        self.tables = tables
        self.max_processes = max_processes
        self.processes = ProcessTable(max_processes)

    def reset(self) -> None:
        self.processes = ProcessTable(self.max_processes)

    @classmethod
    def fit(cls, events: pl.DataFrame, max_processes: int = 200_000, **table_options) -> "EventContext":
        """Fitted on training events held at once (`fit_chunks` of one chunk)."""
        return cls.fit_chunks([events], max_processes, **table_options)

    @classmethod
    def fit_chunks(cls, chunks, max_processes: int = 200_000, **table_options) -> "EventContext":
        """`fit` on training events given chunk by chunk, in order (the process table carried from one
        chunk to the next): the same context as `fit` on all of them at once, holding one chunk."""
        ctx, counts = cls(None, max_processes), RarityCounts()
        for events in chunks:
            parts = ctx.keys(events)
            counts.add(parts["keys"], parts["entities"])
        ctx.tables = RarityTables(**table_options).fit_counts(counts)
        ctx.reset()                      # training's processes do not carry into scoring
        return ctx

    def fit_keys(self, keys: dict, **table_options) -> "EventContext":
        """Fit the rarity tables on the keys of training events (`keys(events)`)."""
        self.tables = RarityTables(**table_options).fit(keys["keys"], keys["entities"])
        return self

    def keys(self, events: pl.DataFrame) -> dict:
        """Process context and rarity keys of events (carrying the process table); see `features_from`."""
        base = event_features(events)
        extra = raw_context_fields(events)
        ctx = process_context(events, self.processes, extra)
        event = base.get_column("event").to_list()
        channel = events.get_column("channel").to_list()
        event_id = events.get_column("event_id").to_list()
        dst = [None if ip is None else f"{ip}:{port}" for ip, port in
               zip(events.get_column("dst_ip").to_list(), events.get_column("dst_port").to_list())]
        keys = rarity_keys({
            "event": event, "image": ctx["proc_image"], "parent": ctx["proc_parent"],
            "grandparent": ctx["proc_grandparent"], "user": ctx["proc_user"], "integrity": ctx["proc_integrity"],
            "shape": _per_distinct(command_shape, ctx["proc_command_line"]), "channel": channel, "event_id": event_id,
            "dst": dst, **{c: extra.get_column(c).to_list() for c in ("target_object", "image_loaded", "target_image")},
            "access": extra.get_column("granted_access").to_list()})
        entities = {"host": events.get_column("host").to_list(), "user": events.get_column("user").to_list()}
        return {"keys": keys, "entities": entities, "base": base, "context": ctx}

    def features(self, events: pl.DataFrame) -> pl.DataFrame:
        """`event_features` plus process context and rarity, one row per event in input order."""
        return self.features_from(self.keys(events))

    @staticmethod
    def processes(parts: dict) -> pl.DataFrame:
        """Which process and process tree each event of `keys(events)` belongs to (for scores above the event)."""
        return pl.DataFrame({"process": parts["context"]["process"], "process_tree": parts["context"]["process_tree"]},
                            schema={"process": pl.Utf8, "process_tree": pl.Utf8})

    def features_from(self, parts: dict, rows: np.ndarray | None = None) -> pl.DataFrame:
        """The features of `keys(events)` output (of its `rows` only, when given)."""
        if self.tables is None:
            raise ConfigError("the event context is not fitted yet")
        if rows is not None:
            parts = _take(parts, rows)
        ctx, rarity = parts["context"], self.tables.rarity(parts["keys"], parts["entities"])
        extra = pl.DataFrame({**{c: ctx[c] for c in CONTEXT_CATEGORICAL},
                              **{c: ctx[c] for c in CONTEXT_NUMERIC}, **rarity},
                             schema={**{c: pl.Utf8 for c in CONTEXT_CATEGORICAL},
                                     **{c: pl.Float64 for c in (*CONTEXT_NUMERIC, *RARITY_COLUMNS)}})
        base = parts["base"]
        label = base.select("label") if "label" in base.columns else None
        out = pl.concat([base.drop("label") if label is not None else base, extra], how="horizontal")
        return pl.concat([out, label], how="horizontal") if label is not None else out

    def to_dict(self) -> dict:
        return {"kind": "event-context", "max_processes": self.max_processes, "rarity": self.tables.to_dict()}

    @classmethod
    def from_dict(cls, state: dict) -> "EventContext":
        if not isinstance(state, dict) or state.get("kind") != "event-context":
            raise ModelFormatError("the model's event context is damaged or of an unknown kind")
        return cls(RarityTables.from_dict(state["rarity"]), int(state.get("max_processes", 200_000)))


# the acting process's command-line and ancestry traits an analyst reads as suspicious on sight
CONTEXT_INDICATORS = ("proc_cmd_encoded", "proc_cmd_hidden", "proc_cmd_cradle", "proc_script_ancestor")
INDICATOR_WEIGHT = 3.0


def context_score(features: pl.DataFrame) -> np.ndarray:
    """A transparent event score from `EventContext.features`: the sum of the event's three largest
    rarities, plus `INDICATOR_WEIGHT` times its process's suspicious traits (encoded command, hidden
    window, download cradle, script host among the ancestors, and the longest base64 run as
    log1p(length) / 5). Higher = more anomalous."""
    rarity = features.select(RARITY_COLUMNS).to_numpy()
    top3 = np.sort(rarity, axis=1)[:, -3:].sum(axis=1)
    traits = features.select(CONTEXT_INDICATORS).to_numpy().sum(axis=1) + features.get_column("proc_cmd_b64").to_numpy() / 5
    return top3 + INDICATOR_WEIGHT * traits


def _take(parts: dict, rows: np.ndarray) -> dict:
    rows = np.asarray(rows)
    pick = lambda values: [values[i] for i in rows]  # noqa: E731
    return {"keys": {k: pick(v) for k, v in parts["keys"].items()},
            "entities": {k: pick(v) for k, v in parts["entities"].items()},
            "context": {k: pick(v) for k, v in parts["context"].items()},
            "base": parts["base"][rows.tolist()]}


def _per_distinct(fn, values: list) -> list:
    """`[fn(v) for v in values]`, computing each distinct value once (logs repeat the same strings)."""
    cache: dict = {}
    out = []
    for v in values:
        r = cache.get(v, cache)
        if r is cache:
            r = cache[v] = fn(v)
        out.append(r)
    return out


def is_log_model(input_columns) -> bool:
    """True when a model's input columns are event features (it must be fed `event_features`)."""
    return LOG_INPUT_MARKER in set(input_columns or ())


# ------------------------------------------------------------------ entity windows
WINDOW_EVENT_KINDS = {
    "process_created": (("Security", 4688), ("Microsoft-Windows-Sysmon/Operational", 1)),
    "logons": (("Security", 4624),),
    "failed_logons": (("Security", 4625),),
    "explicit_credentials": (("Security", 4648),),
    "special_privileges": (("Security", 4672),),
    "network_connections": (("Microsoft-Windows-Sysmon/Operational", 3), ("Security", 5156)),
    "process_access": (("Microsoft-Windows-Sysmon/Operational", 10),),
    "registry_events": (("Microsoft-Windows-Sysmon/Operational", 12), ("Microsoft-Windows-Sysmon/Operational", 13)),
    "powershell_events": (("Windows PowerShell", 800), ("Microsoft-Windows-PowerShell/Operational", 4103),
                          ("Microsoft-Windows-PowerShell/Operational", 4104)),
    "service_installs": (("System", 7045), ("Security", 4697)),
    "scheduled_tasks": (("Security", 4698),),
}


def parse_window(window: str | int | float | timedelta) -> timedelta:
    """`5m`, `30s`, `1h`, seconds as a number, or a timedelta -> a positive timedelta."""
    if isinstance(window, timedelta):
        td = window
    elif isinstance(window, (int, float)):
        td = timedelta(seconds=float(window))
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(window))
        if not m:
            raise ConfigError(f"window must look like 30s, 5m or 1h, got {window!r}")
        unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        td = timedelta(seconds=float(m.group(1)) * unit)
    if td.total_seconds() <= 0:
        raise ConfigError(f"window must be positive, got {window!r}")
    return td


def window_starts(events: pl.DataFrame, window: timedelta) -> pl.Series:
    """The start of each event's window (timestamps truncated to multiples of `window`)."""
    every = f"{int(window.total_seconds() * 1_000_000)}us"
    return events.get_column("timestamp").dt.truncate(every).alias("window_start")


def entity_windows(events: pl.DataFrame, by: str = "host", window: str | timedelta = "5m",
                   known_pairs: set[tuple[str, str]] | None = None) -> pl.DataFrame:
    """Aggregates per entity (`host` or `user`) and window; one row per (entity, window_start)."""
    if by not in ("host", "user"):
        raise ConfigError(f"entities are 'host' or 'user', got {by!r}")
    td = parse_window(window)
    df = events.filter(pl.col(by).is_not_null() & pl.col("timestamp").is_not_null())
    if df.height == 0:
        return pl.DataFrame(schema={"entity": pl.Utf8, "window_start": pl.Datetime("us"), "events": pl.UInt32})
    img = pl.Series("_img", _per_distinct(base_name, df.get_column("image").to_list()), dtype=pl.Utf8)
    par = pl.Series("_par", _per_distinct(base_name, df.get_column("parent_image").to_list()), dtype=pl.Utf8)
    enc = pl.Series("_enc", _per_distinct(lambda c: 1.0 if (c and _ENCODED.search(c)) else 0.0,
                                          df.get_column("command_line").to_list()), dtype=pl.Float64)
    df = df.with_columns(window_starts(df, td), img, par, enc).with_columns(
        pl.concat_str([pl.col("_img").fill_null("none"), pl.col("_par").fill_null("none")], separator="<").alias("_pair"))
    aggs = [pl.len().alias("events"),
            pl.col("event_id").n_unique().alias("distinct_event_ids"),
            pl.col("_img").drop_nulls().n_unique().alias("distinct_processes"),
            pl.col("_par").drop_nulls().n_unique().alias("distinct_parents"),
            pl.col("_pair").n_unique().alias("distinct_process_parent_pairs"),
            pl.col("host" if by == "user" else "user").drop_nulls().n_unique().alias(
                "distinct_hosts" if by == "user" else "distinct_users"),
            pl.col("logon_type").drop_nulls().n_unique().alias("distinct_logon_types"),
            (pl.col("logon_type").is_in([3, 10])).sum().alias("network_logons"),
            (pl.col("outcome") == "failure").sum().alias("failures"),
            pl.col("_enc").sum().alias("encoded_commands")]
    for name, keys in WINDOW_EVENT_KINDS.items():
        cond = pl.lit(False)
        for channel, eid in keys:
            cond = cond | ((pl.col("channel") == channel) & (pl.col("event_id") == eid))
        aggs.append(cond.sum().alias(name))
    if known_pairs is not None:
        known = [f"{a}<{b}" for a, b in known_pairs]
        aggs.append((~pl.col("_pair").is_in(known)).sum().alias("new_process_parent_pairs"))
    out = (df.group_by([by, "window_start"]).agg(aggs)
           .rename({by: "entity"})
           .with_columns((pl.col("window_start") + td).alias("window_end"))
           .sort(["entity", "window_start"]))
    return out.select(["entity", "window_start", "window_end", *[c for c in out.columns
                                                                  if c not in ("entity", "window_start", "window_end")]])


def process_parent_pairs(events: pl.DataFrame) -> set[tuple[str, str]]:
    """The (process, parent) base-name pairs seen in `events` (for `entity_windows(known_pairs=...)`)."""
    imgs = [base_name(v) or "none" for v in events.get_column("image").to_list()]
    pars = [base_name(v) or "none" for v in events.get_column("parent_image").to_list()]
    return set(zip(imgs, pars))
