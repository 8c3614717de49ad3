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
