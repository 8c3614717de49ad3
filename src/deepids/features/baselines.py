"""Rarity of what an event shows, against training data: overall and per host or user (UEBA).

:class:`RarityTables` counts, on training events only, how often each *key* occurs: the event
kind with its process image, the parent -> child image pair of the acting process and its
lineage (grandparent > parent > child), the user and the integrity level each image runs with,
the shape of each image's command line, the network destinations of each image (Sysmon 3), the
registry paths each image writes (Sysmon 12/13/14, with SIDs, GUIDs and numbers masked), the
modules each image loads (Sysmon 7), and which image opens which (Sysmon 10, with the access
mask). A key's rarity is `-log10((count + 1) / (total + 1))`: 0 for what every event shows, the
largest for a key never seen in training (the unseen slot). Events a key does not apply to get 0.

Per-entity baselines: the same count of (event kind, image) per host and per user, so an event
can be rare *for this host* although common elsewhere. An entity not seen in training falls back
to the overall table. Memory is bounded: each table keeps its `max_keys` most frequent keys and
each per-entity table its `max_entities` busiest entities (what is dropped counts as unseen).
The fitted tables are plain dicts, saved as JSON with the model.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import polars as pl

from deepids.errors import ModelFormatError

# key name -> the event kinds it applies to (None: every event)
RARITY_KEYS = ("event_image", "parent_child", "lineage", "image_user", "image_integrity", "cmd_shape", "network",
               "registry", "image_load", "process_access")
ENTITY_KEYS = ("host", "user")
RARITY_COLUMNS = tuple(f"rarity_{k}" for k in RARITY_KEYS) + tuple(f"rarity_{k}_baseline" for k in ENTITY_KEYS)
_SEP = "\x1f"
_MASK = re.compile(r"(?i)s-1-5-21-[\d-]+|\{?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}?|\d+")


def registry_path(target: str | None, depth: int = 6) -> str | None:
    """`HKU\\S-1-5-21-..\\Software\\Classes\\ms-settings\\shell\\open\\command\\(Default)` -> the path with
    SIDs, GUIDs and numbers masked, cut to its first `depth` parts (lower case)."""
    if not target:
        return None
    parts = _MASK.sub("#", str(target).lower()).split("\\")
    return "\\".join(parts[:depth])


def event_keys(event: str, image: str, parent: str, grandparent: str, user: str | None, integrity: str | None,
               shape: str, channel_event: tuple, dst: str | None, target_object: str | None,
               image_loaded: str | None, target_image: str | None, access: str | None) -> dict:
    """The rarity keys one event shows (None where a key does not apply)."""
    sysmon_id = channel_event[1] if channel_event[0] == "Microsoft-Windows-Sysmon/Operational" else None
    return {
        "event_image": f"{event}|{image}",
        "parent_child": f"{parent}>{image}",
        "lineage": f"{grandparent}>{parent}>{image}",
        "image_user": f"{image}|{user or 'none'}",
        "image_integrity": f"{image}|{integrity}" if integrity else None,
        "cmd_shape": f"{image}|{shape}" if shape != "none" else None,
        "network": f"{image}>{dst}" if sysmon_id == 3 and dst else None,
        "registry": f"{image}>{registry_path(target_object)}" if sysmon_id in (12, 13, 14) and target_object else None,
        "image_load": f"{image}<{_base(image_loaded)}" if sysmon_id == 7 and image_loaded else None,
        "process_access": f"{image}>{_base(target_image)}|{access}" if sysmon_id == 10 and target_image else None,
    }


def rarity_keys(columns: dict[str, list]) -> dict[str, list]:
    """The rarity keys of many events at once, column by column: the same strings as `event_keys`
    per event. `columns`: `event`, `image`, `parent`, `grandparent`, `user`, `integrity`, `shape`,
    `channel`, `event_id`, `dst`, `target_object`, `image_loaded`, `target_image`, `access`, one
    value per event."""
    frame = pl.DataFrame({k: pl.Series(k, v, dtype=pl.Int64 if k == "event_id" else pl.Utf8)
                          for k, v in columns.items()})
    text = lambda c: pl.col(c).fill_null("None")  # noqa: E731  (as an f-string shows None)
    given = lambda c: pl.col(c).is_not_null() & (pl.col(c) != "")  # noqa: E731
    sysmon = pl.when(pl.col("channel") == "Microsoft-Windows-Sysmon/Operational").then(pl.col("event_id"))
    distinct = lambda fn, c: pl.col(c).replace_strict(  # noqa: E731
        {v: fn(v) for v in frame.get_column(c).drop_nulls().unique().to_list()}, default=None, return_dtype=pl.Utf8)
    img = text("image")
    out = frame.select(
        pl.concat_str([pl.col("event"), img], separator="|").alias("event_image"),
        pl.concat_str([text("parent"), img], separator=">").alias("parent_child"),
        pl.concat_str([text("grandparent"), text("parent"), img], separator=">").alias("lineage"),
        pl.concat_str([img, pl.when(given("user")).then(pl.col("user")).otherwise(pl.lit("none"))],
                      separator="|").alias("image_user"),
        pl.when(given("integrity")).then(pl.concat_str([img, pl.col("integrity")], separator="|"))
        .alias("image_integrity"),
        pl.when(pl.col("shape") != "none").then(pl.concat_str([img, pl.col("shape")], separator="|")).alias("cmd_shape"),
        pl.when((sysmon == 3) & given("dst")).then(pl.concat_str([img, pl.col("dst")], separator=">")).alias("network"),
        pl.when(sysmon.is_in([12, 13, 14]) & given("target_object"))
        .then(pl.concat_str([img, distinct(registry_path, "target_object").fill_null("None")], separator=">"))
        .alias("registry"),
        pl.when((sysmon == 7) & given("image_loaded"))
        .then(pl.concat_str([img, distinct(_base, "image_loaded")], separator="<")).alias("image_load"),
        pl.when((sysmon == 10) & given("target_image"))
        .then(pl.concat_str([img, pl.lit(">"), distinct(_base, "target_image"), pl.lit("|"), text("access")]))
        .alias("process_access"),
    )
    return {name: out.get_column(name).to_list() for name in RARITY_KEYS}


def _base(path) -> str:
    return re.split(r"[\\/]", str(path))[-1].lower()


class RarityCounts:
    """Counts of rarity keys (overall, and of `event_image` per host and user) added chunk by chunk, so
    training reads its events once, a chunk at a time. Memory follows the distinct keys and
    entities, not the events; `RarityTables.fit_counts` keeps the most frequent of them."""

    def __init__(self):
        self.keys: dict[str, Counter] = {name: Counter() for name in RARITY_KEYS}
        self.entities: dict[str, dict[str, Counter]] = {ent: {} for ent in ENTITY_KEYS}

    def add(self, keys: dict[str, list], entities: dict[str, list]) -> "RarityCounts":
        """One chunk: `keys` and `entities` as `RarityTables.fit` takes them."""
        for name in RARITY_KEYS:
            self.keys[name].update(k for k in keys[name] if k is not None)
        for ent in ENTITY_KEYS:
            per = self.entities[ent]
            for e, k in zip(entities[ent], keys["event_image"]):
                if e is not None:
                    counter = per.get(e)
                    if counter is None:
                        counter = per[e] = Counter()
                    counter[k] += 1
        return self


class RarityTables:
    """Counts of rarity keys, overall and per host/user, fitted on training events."""

    def __init__(self, max_keys: int = 20_000, max_entities: int = 500, max_entity_keys: int = 2_000):
        self.max_keys = max_keys
        self.max_entities = max_entities
        self.max_entity_keys = max_entity_keys
        self.counts_: dict[str, dict[str, int]] = {}
        self.totals_: dict[str, int] = {}
        self.entity_counts_: dict[str, dict[str, dict[str, int]]] = {}
        self.entity_totals_: dict[str, dict[str, int]] = {}

    def fit(self, keys: dict[str, list], entities: dict[str, list]) -> "RarityTables":
        """`keys`: key name -> one key (or None) per training event; `entities`: host/user -> one per event."""
        return self.fit_counts(RarityCounts().add(keys, entities))

    def fit_counts(self, counts: "RarityCounts") -> "RarityTables":
        """The tables of counts gathered chunk by chunk (the same tables as `fit` on all the events at once)."""
        for name in RARITY_KEYS:
            self.counts_[name] = dict(counts.keys[name].most_common(self.max_keys))
            self.totals_[name] = counts.keys[name].total()
        for ent in ENTITY_KEYS:
            per = counts.entities[ent]
            busiest = sorted(per, key=lambda e: (-per[e].total(), e))[:self.max_entities]
            self.entity_counts_[ent] = {e: dict(per[e].most_common(self.max_entity_keys)) for e in busiest}
            self.entity_totals_[ent] = {e: per[e].total() for e in busiest}
        return self

    def rarity(self, keys: dict[str, list], entities: dict[str, list]) -> dict[str, np.ndarray]:
        """One rarity column per key name and per entity kind, in event order (vectorised lookups)."""
        out: dict[str, np.ndarray] = {}
        for name in RARITY_KEYS:
            values = pl.Series(keys[name], dtype=pl.Utf8)
            count = values.replace_strict(self.counts_.get(name, {}), default=0,
                                          return_dtype=pl.Int64).fill_null(0).to_numpy()
            r = -np.log10((count + 1) / (self.totals_.get(name, 0) + 1))
            out[f"rarity_{name}"] = np.where(values.is_null().to_numpy(), 0.0, r)
        key = pl.Series(keys["event_image"], dtype=pl.Utf8)
        g_count = key.replace_strict(self.counts_.get("event_image", {}), default=0,
                                     return_dtype=pl.Int64).fill_null(0).to_numpy()
        g_rarity = -np.log10((g_count + 1) / (self.totals_.get("event_image", 0) + 1))
        for ent in ENTITY_KEYS:
            tables, totals = self.entity_counts_.get(ent, {}), self.entity_totals_.get(ent, {})
            entity = pl.Series(entities[ent], dtype=pl.Utf8)
            flat = {f"{e}{_SEP}{k}": c for e, t in tables.items() for k, c in t.items()}
            pair = pl.select(pl.concat_str([entity, key], separator=_SEP)).to_series()
            count = pair.replace_strict(flat, default=0, return_dtype=pl.Int64).fill_null(0).to_numpy()
            total = entity.replace_strict(totals, default=-1, return_dtype=pl.Int64).fill_null(-1).to_numpy()
            # this entity's own baseline; an entity not seen in training falls back to the overall table
            out[f"rarity_{ent}_baseline"] = np.where(total >= 0, -np.log10((count + 1) / (np.maximum(total, 0) + 1)),
                                                     g_rarity)
        return out

    def to_dict(self) -> dict:
        return {"max_keys": self.max_keys, "max_entities": self.max_entities, "max_entity_keys": self.max_entity_keys,
                "counts": self.counts_, "totals": self.totals_, "entity_counts": self.entity_counts_,
                "entity_totals": self.entity_totals_}

    @classmethod
    def from_dict(cls, state: dict) -> "RarityTables":
        try:
            out = cls(int(state["max_keys"]), int(state["max_entities"]), int(state["max_entity_keys"]))
            out.counts_ = {k: {kk: int(vv) for kk, vv in v.items()} for k, v in state["counts"].items()}
            out.totals_ = {k: int(v) for k, v in state["totals"].items()}
            out.entity_counts_ = state["entity_counts"]
            out.entity_totals_ = state["entity_totals"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelFormatError(f"the model's event rarity tables are damaged: {exc}") from exc
        return out
