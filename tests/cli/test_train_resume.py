"""`deepids train --checkpoint-dir/--resume`: a training run killed with SIGKILL after epoch 3 and resumed
from the command line ends like an uninterrupted run (validation loss within 1e-4, same seed, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# the CLI, with the process killing itself (kill -9) right after the checkpoint of epoch 3 is written
KILLED_AFTER_EPOCH_3 = """
import os, signal, sys
from deepids.models import checkpoint
save = checkpoint.Checkpoints.save
def save_then_die(self, network, optimizer, step_fn, state):
    path = save(self, network, optimizer, step_fn, state)
    if state.epoch == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return path
checkpoint.Checkpoints.save = save_then_die
from deepids.cli import main
main()
"""


def deepids(*args, script: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", script] if script else [sys.executable, "-m", "deepids"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def history(model_dir) -> dict:
    return json.loads((model_dir / "model.json").read_text())["training"]["history"]


def test_train_killed_in_epoch_4_resumes_to_the_same_validation_loss(samples_dir, tmp_path):
    data = samples_dir / "cicids2017" / "MachineLearningCVE" / "m1.csv.gz"
    options = ["--model", "dense-ae", "--data", data, "--epochs", "6", "--patience", "10", "--quiet"]
    killed = deepids("train", *options, "-o", tmp_path / "never", "--checkpoint-dir", tmp_path / "ckpt",
                     script=KILLED_AFTER_EPOCH_3)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "never").exists()
    resumed = deepids("train", *options, "-o", tmp_path / "resumed", "--resume", tmp_path / "ckpt")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    whole = deepids("train", *options, "-o", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    a, b = history(tmp_path / "resumed"), history(tmp_path / "whole")
    assert a["resumed_from_epoch"] == 3 and len(a["val_loss"]) == len(b["val_loss"]) == 6
    assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-4)
    assert abs(a["best_val_loss"] - b["best_val_loss"]) <= 1e-4


def test_resume_from_a_missing_directory_is_a_user_error(samples_dir, tmp_path):
    data = samples_dir / "cicids2017" / "MachineLearningCVE" / "m1.csv.gz"
    proc = deepids("train", "--model", "dense-ae", "--data", data, "-o", tmp_path / "m", "--resume", tmp_path / "nope")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("deepids: error: --resume")
