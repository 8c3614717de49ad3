"""Process-tree context end to end: a log model (the GAN, and `event-rarity`, the default for logs)
trained with `fit_log_model` on the shipped OTRF samples, saved and loaded, hunting process trees. The VBS-launcher and fodhelper UAC-bypass cases
are CRAFTED event sequences (tests/hunting/crafted.py) added to a real recording."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest

from deepids.hunting import hunt
from deepids.hunting.logs import LogFeatures, fit_log_model, read_log_features
from deepids.io.logs import read_events
from deepids.models import MODELS, load_model
from deepids.models.base import Scores

from crafted import fodhelper_bypass, vbs_launcher, write_recording

pytestmark = pytest.mark.usefixtures("one_thread")
BACKGROUND = "covenant_copy_smb_CreateRequest_2020-09-22145302.json.gz"


@pytest.fixture(scope="module", params=["gan", "event-rarity"])
def trained(samples_dir, tmp_path_factory, request):
    root = samples_dir / "otrf" / "atomic"
    train = [p for p in sorted(root.rglob("*.json.gz")) if p.name != BACKGROUND]
    events, _ = read_events(train)
    model = fit_log_model(MODELS[request.param](seed=0, verbose=False), events)
    path = model.save(tmp_path_factory.mktemp("m") / request.param)
    return model, path, next(root.rglob(BACKGROUND))


def test_context_travels_with_the_model(trained):
    model, path, background = trained
    doc = json.loads((path / "model.json").read_text())
    assert doc["state"]["feature_context"]["kind"] == "event-context"
    loaded = load_model(path)
    events, features, _ = read_log_features([background], model=loaded)
    assert {"process", "process_tree"} <= set(events.columns) and "rarity_parent_child" in features.columns
    again = LogFeatures(model)(events)
    np.testing.assert_allclose(loaded.score_records(features).score, model.score_records(again).score, rtol=1e-5)


@pytest.mark.parametrize("case", [vbs_launcher, fodhelper_bypass], ids=["vbs-launcher", "fodhelper-uac-bypass"])
def test_crafted_attack_tree_ranked_first(trained, tmp_path, case):
    model, path, background = trained
    crafted = case(datetime(2020, 9, 22, 18, 53, 40))
    data = write_recording(tmp_path / f"{case.__name__}.json.gz", background, crafted)
    events, features, _ = read_log_features([data], model=load_model(path))
    result = hunt(events, model.score_records(features), by="tree", top=5)
    top = result.findings[0]
    images = {p["image"].rsplit("\\", 1)[-1].lower() for p in top["processes"] if p["image"]}
    assert images & {"wscript.exe", "fodhelper.exe", "powershell.exe"}, top["processes"]
    # the evidence shown first is a crafted event (they carry no record number; the real ones do)
    assert top["evidence"][0]["record_id"] is None
    crafted_ids = {9001, 9002, 9101, 9102, 9103, 9104}
    assert any(f"({pid})" in p["process"] for p in top["processes"] for pid in crafted_ids), top["processes"]
