"""Options and choices shared by several `deepids` commands."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


class ThresholdMethod(str, Enum):
    percentile = "percentile"
    fpr = "fpr"
    fixed = "fixed"
    best_f1 = "best-f1"


class Target(str, Enum):
    binary = "binary"
    family = "family"


class ScoreMode(str, Enum):
    last = "last"
    window = "window"


class Objective(str, Enum):
    window = "window"
    last = "last"


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class LogLevel(str, Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class HuntBy(str, Enum):
    host = "host"
    user = "user"
    process = "process"
    tree = "tree"


Layout = Annotated[Optional[str], typer.Option(
    help="Force the input layout: cicids2017, cicids2017-labelled, cse-cic-ids2018, nsl-kdd or generic; "
         "connection logs: zeek-conn, zeek-conn-json, suricata-eve, nfdump-csv or nfstream "
         "(default: detected from the header or first record).")]
EngineOption = Annotated[Engine, typer.Option(
    help="local: this process; ray: a Ray cluster (pip install 'deepids[ray]'; see the README, 'On a Ray cluster').")]
Address = Annotated[Optional[str], typer.Option(
    help="--engine ray: the cluster to join ('auto', 'host:6379' or 'ray://host:10001'); default: start a local "
         "one on loopback with token authentication.")]
LabelColumn = Annotated[Optional[str], typer.Option(help="Label column of a generic CSV/Parquet file.")]
DataFiles = Annotated[list[Path], typer.Option("--data", "-d", help="Flow file (CSV, CSV.gz or Parquet); repeat for more.")]
ModelDir = Annotated[Path, typer.Option("--model", "-m", help="Saved model directory.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
JsonOut = Annotated[Optional[Path], typer.Option("--json", help="Write the result as JSON here ('-' for stdout).")]


def is_logs(paths) -> bool:
    """Whether the inputs are Windows event logs (.evtx, JSON Lines) rather than flows or captures."""
    from deepids.io.logs import looks_like_logs

    return looks_like_logs(paths)
