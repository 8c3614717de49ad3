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


class HuntBy(str, Enum):
    host = "host"
    user = "user"


Layout = Annotated[Optional[str], typer.Option(
    help="Force the input layout: cicids2017, cicids2017-labelled, cse-cic-ids2018, nsl-kdd or generic "
         "(default: detected from the header).")]
LabelColumn = Annotated[Optional[str], typer.Option(help="Label column of a generic CSV/Parquet file.")]
DataFiles = Annotated[list[Path], typer.Option("--data", "-d", help="Flow file (CSV, CSV.gz or Parquet); repeat for more.")]
ModelDir = Annotated[Path, typer.Option("--model", "-m", help="Saved model directory.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
JsonOut = Annotated[Optional[Path], typer.Option("--json", help="Write the result as JSON here ('-' for stdout).")]


def is_logs(paths) -> bool:
    """Whether the inputs are Windows event logs (.evtx, JSON Lines) rather than flows or captures."""
    from deepids.io.logs import looks_like_logs

    return looks_like_logs(paths)
