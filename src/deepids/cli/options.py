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


# `deepids train`'s model options: each sets the model parameter configure.MODEL_OPTIONS names, and
# only when given (None: the model's own default)
SequenceLength = Annotated[Optional[int], typer.Option(help="Records per window (per entity).")]
Epochs = Annotated[Optional[int], typer.Option(help="Maximum training epochs.")]
BatchSize = Annotated[Optional[int], typer.Option(help="Windows (or records) per training batch.")]
LearningRate = Annotated[Optional[float], typer.Option(help="Adam learning rate (the autoencoders use 3e-3, "
                                                       "measured better than Keras' 1e-3).")]
Patience = Annotated[Optional[int], typer.Option(help="Early-stopping patience in epochs.")]
Seed = Annotated[Optional[int], typer.Option(help="Random seed.")]
Entity = Annotated[Optional[str], typer.Option(help="Column that groups records into windows ('none' for file "
                                               "order).")]
ScoreModeOption = Annotated[Optional[ScoreMode], typer.Option(help="Score a record by its own step (last) or the "
                                                              "whole window.")]
ObjectiveOption = Annotated[Optional[Objective], typer.Option(help="lstm-ae: train on every step of a window (window, "
                                                              "the published training) or on its newest step only (last); "
                                                              "default: what --score-mode scores.")]
ThresholdOption = Annotated[Optional[ThresholdMethod], typer.Option(help="How to choose the alert threshold.")]
Percentile = Annotated[Optional[float], typer.Option(help="Percentile of benign validation scores "
                                                     "(--threshold percentile).")]
Fpr = Annotated[Optional[float], typer.Option(help="Target false-positive rate (--threshold fpr).")]
ThresholdValue = Annotated[Optional[float], typer.Option(help="Threshold value (--threshold fixed).")]
Device = Annotated[Optional[str], typer.Option(help="auto (cuda when present), cpu or cuda.")]
TargetOption = Annotated[Optional[Target], typer.Option(help="Classifiers: learn benign/attack (binary) or attack "
                                                        "families.")]
ScoreMethod = Annotated[Optional[str], typer.Option(help="gan: reconstruction (default), latent-search "
                                                    "(AnoGAN, about 20x slower to score) or discriminator.")]
Members = Annotated[Optional[int], typer.Option(help="lstm-ae-ensemble: how many autoencoders.")]
Detector = Annotated[Optional[str], typer.Option(help="two-stage: stage one, the model that flags records "
                                                 "(a detector such as lstm-ae, dense-ae, or a binary "
                                                 "classifier such as dnn, random-forest).")]
Classifier = Annotated[Optional[str], typer.Option(help="two-stage: stage two, the classifier that names the "
                                                   "attack family of flagged records (dnn, cnn, "
                                                   "random-forest).")]


def is_logs(paths) -> bool:
    """Whether the inputs are Windows event logs (.evtx, JSON Lines) rather than flows or captures."""
    from deepids.io.logs import looks_like_logs

    return looks_like_logs(paths)
