"""Per-event features and per-entity windows on real OTRF events."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from deepids.errors import ConfigError
from deepids.features.events import (EVENT_FEATURES, base_name, command_line_stats, entity_windows, event_features,
                                     parse_window, process_parent_pairs)
from deepids.io.logs import read_events


@pytest.fixture(scope="module")
def events(samples_dir):
    return read_events(samples_dir / "otrf")[0]


def test_event_features(events):
    f = event_features(events)
    assert f.height == events.height and tuple(f.columns) == EVENT_FEATURES
    assert f.select(pl.all().null_count()).sum_horizontal().item() == 0
    # Empire's launcher: powershell -noP -sta -w 1 -enc <base64>
    launch = f.filter(pl.col("cmd_encoded") == 1)
    assert launch.height > 0 and launch.get_column("cmd_longest_token").min() >= 20
    assert base_name("C:\\Windows\\System32\\WHOAMI.EXE") == "whoami.exe"


def test_command_line_stats():
    n, entropy, special, upper, encoded, longest = command_line_stats("powershell -enc SQBGACgAJABQAFMAVgBlAFIAcwBpAE8ATgBUAEEAQgBMAGUA")
    assert encoded == 1 and longest >= 40 and entropy > 3 and 0 <= special < 1 and n > 50
    assert command_line_stats(None) == (0.0,) * 6
    assert command_line_stats("net user /domain")[4] == 0


def test_entity_windows(events):
    w = entity_windows(events, "host", "5m", known_pairs=process_parent_pairs(events.head(100)))
    assert w.get_column("events").sum() == events.filter(pl.col("host").is_not_null()).height
    assert (w.get_column("window_end") - w.get_column("window_start") == timedelta(minutes=5)).all()
    assert w.get_column("new_process_parent_pairs").sum() > 0
    users = entity_windows(events, "user", "1m")
    assert users.get_column("events").sum() == events.filter(pl.col("user").is_not_null()).height
    assert parse_window("30s") == timedelta(seconds=30) and parse_window(60) == timedelta(minutes=1)
    with pytest.raises(ConfigError):
        parse_window("five minutes")
    with pytest.raises(ConfigError):
        entity_windows(events, "ip")


# ------------------------------------------------------------------ process-tree context and rarity
from deepids.features.baselines import RARITY_COLUMNS, RarityTables, registry_path  # noqa: E402
from deepids.features.events import CONTEXT_FEATURES, EventContext, context_score  # noqa: E402
from deepids.features.process_tree import ProcessTable, command_shape, integrity_level  # noqa: E402


@pytest.fixture(scope="module")
def context(events):
    return EventContext.fit(events)


def test_context_features_batch_equals_chunked(events, context):
    """The process table is carried from chunk to chunk: one go, chunks and single events agree."""
    whole = EventContext.from_dict(context.to_dict()).features(events)
    assert whole.height == events.height and set(CONTEXT_FEATURES) <= set(whole.columns)
    assert whole.select(pl.all().null_count()).sum_horizontal().item() == 0
    chunked = EventContext.from_dict(context.to_dict())
    parts = [chunked.features(events.slice(i, 257)) for i in range(0, events.height, 257)]
    assert pl.concat(parts).equals(whole)
    # live: the last 300 events one at a time, after the rest in one go
    live = EventContext.from_dict(context.to_dict())
    live.features(events.slice(0, events.height - 300))
    one_by_one = pl.concat([live.features(events.slice(i, 1)) for i in range(events.height - 300, events.height)])
    assert one_by_one.equals(whole.slice(events.height - 300, 300))


def test_context_follows_the_empire_agent(events, context):
    """Empire's agent (powershell -enc) is known from its PowerShell events; its Sysmon events inherit
    the encoded command line of their process."""
    f = EventContext.from_dict(context.to_dict()).features(events)
    samr = pl.Series(events.get_column("source_file").str.starts_with("empire_shell_samr").to_list())
    agent = f.filter(samr & (pl.col("proc_cmd_encoded") == 1))
    assert agent.height > 100
    assert agent.filter(pl.col("event").str.starts_with("sysmon/")).height > 0   # not only its PowerShell events
    # rarity of keys seen in training is below the unseen slot
    tables = context.tables
    assert tables.rarity({k: ["never-seen-key"] for k in tables.counts_}, {"host": ["X"], "user": ["x"]})[
        "rarity_event_image"][0] > f.get_column("rarity_event_image").median()


def test_process_table_is_bounded(events):
    ctx = EventContext(context_fit_tables(events), max_processes=50)
    ctx.features(events)
    assert len(ctx.processes) <= 50


def context_fit_tables(events) -> RarityTables:
    return EventContext.fit(events.head(500)).tables


def test_rarity_tables_round_trip_and_bounds(events, context):
    state = context.to_dict()
    again = EventContext.from_dict(state)
    assert again.tables.to_dict() == context.tables.to_dict()
    small = EventContext.fit(events, max_keys=10, max_entities=1)
    assert all(len(v) <= 10 for v in small.tables.counts_.values())
    assert all(len(v) <= 1 for v in small.tables.entity_counts_.values())
    with pytest.raises(Exception) as err:
        EventContext.from_dict({"kind": "something else"})
    assert "event context" in str(err.value)


def test_context_helpers():
    assert integrity_level("S-1-16-12288") == "high" and integrity_level("High") == "high"
    assert command_shape(None) == "none"
    shape = command_shape("powershell -noP -sta -w 1 -enc " + "QUFB" * 40)
    assert shape.startswith("enc+hidden+noprofile+b64")
    assert command_shape("cmd.exe /c whoami").startswith("len")
    assert registry_path("HKU\\S-1-5-21-1-2-3-1104_Classes\\ms-settings\\shell\\open\\command\\(Default)") == \
        "hku\\#_classes\\ms-settings\\shell\\open\\command"
    table = ProcessTable(max_processes=4)
    for pid in range(10):
        table.acting("H", None, pid, "x.exe", None, None)
    assert len(table) <= 4


def test_context_score_ranks_the_agent_above_background(events, context):
    f = EventContext.from_dict(context.to_dict()).features(events)
    s = context_score(f)
    encoded = f.get_column("proc_cmd_encoded").to_numpy() == 1
    assert s[encoded].mean() > s[~encoded].mean()
    assert f.select(RARITY_COLUMNS).to_numpy().min() >= 0


def test_rarity_keys_column_by_column_equal_event_keys_per_event(events, context):
    """`rarity_keys` (polars, column by column) gives the very strings `event_keys` gives per event."""
    from deepids.features.baselines import RARITY_KEYS, event_keys

    parts = EventContext.from_dict(context.to_dict()).keys(events)
    ctx, keys = parts["context"], parts["keys"]
    from deepids.features.process_tree import raw_context_fields

    extra = raw_context_fields(events)
    event = parts["base"].get_column("event").to_list()
    dst = [None if ip is None else f"{ip}:{port}" for ip, port in zip(events["dst_ip"].to_list(),
                                                                      events["dst_port"].to_list())]
    for i in range(events.height):
        one = event_keys(event[i], ctx["proc_image"][i], ctx["proc_parent"][i], ctx["proc_grandparent"][i],
                         ctx["proc_user"][i], ctx["proc_integrity"][i], command_shape(ctx["proc_command_line"][i]),
                         (events["channel"][i], events["event_id"][i]), dst[i], extra["target_object"][i],
                         extra["image_loaded"][i], extra["target_image"][i], extra["granted_access"][i])
        assert {k: keys[k][i] for k in RARITY_KEYS} == one, i
    assert any(keys["registry"]) and any(keys["image_load"]) and any(keys["process_access"])
