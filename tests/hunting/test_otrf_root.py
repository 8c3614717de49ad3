"""An OTRF index labels only the recordings beneath it, never data in some far descendant folder."""

from __future__ import annotations

import shutil

from deepids.hunting.logs import otrf_root_of


def test_an_index_far_up_the_tree_is_not_picked_up(samples_dir, tmp_path):
    root = tmp_path / "otrf"
    shutil.copytree(samples_dir / "otrf", root)
    recording = next((root / "atomic").rglob("*.json.gz"))
    assert otrf_root_of([recording]) == root and otrf_root_of([root / "atomic"]) == root
    far = root / "unrelated" / "case" / "evidence" / "logs"
    far.mkdir(parents=True)
    shutil.copy(recording, far / "events.json.gz")
    assert otrf_root_of([far / "events.json.gz"]) is None
