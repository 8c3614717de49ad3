"""Every bench/ entry point runs end to end on a tiny real input, so none can rot unseen.

(`bench.hunt_loro` and `bench.hunt_all` have theirs in tests/hunting/test_bench_hunting.py.)

Each runs as a user runs it (`python -m bench...` in a fresh process, from the repository root)
with options that make it small, and must write its JSON. The figures of these runs mean
nothing (tiny inputs on a shared machine); the tests only check that each harness still works
and reports what it says it measures.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data" / "samples"
pytestmark = pytest.mark.slow


def bench(module: str, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{module} failed:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    return proc


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_flows_harness(tmp_path):
    out = tmp_path / "flows.json"
    bench("bench", "--rows", 300, "--repeats", 1, "--epochs", 1, "--fast-batch", 0, "--train-windows", 200,
          "--val-windows", 100, "--infer-windows", 200, "--models", "dense-ae",
          "--no-compare-threads", "--out", out)
    r = json.loads(out.read_text())["results"]
    assert r["lstm_ae_vs_keras"]["windows"]["train"] == 200
    if not has("tensorflow"):        # the Keras reference is optional: skipped with its reason
        assert "TensorFlow is not installed" in r["lstm_ae_vs_keras"]["keras"]["skipped"]
    sys.path.insert(0, str(REPO))
    from bench.flows import QUICK     # the short training settings every model can take
    from deepids.models import MODELS

    for name, params in QUICK.items():
        assert set(params) <= set(MODELS[name]._param_names()), name
    assert r["models"]["dense-ae"]["score_file"]["records"] == 300


def test_device_bench(tmp_path):
    out = tmp_path / "device.json"
    bench("bench.device", "--rows", 3000, "--epochs", 1, "--batch-sizes", 256, "--models", "dense-ae", "--out", out)
    result = json.loads(out.read_text())
    assert result["device"] in ("cpu", "cuda", "mps") or result["device"].startswith("cuda")
    entry = result["models"]["dense-ae"]
    assert entry["score_file"]["records"] == 3000 and entry["fit_batch_256"]["seconds"] > 0
    assert "RESAMPLED" in result["data"]


def test_reference_keras_runs_where_tensorflow_is(tmp_path):
    if not has("tensorflow"):
        pytest.skip("TensorFlow is absent (the [reference] extra, `make bench-reference`): the published Keras "
                    "model cannot run; the flows harness skips it with the same reason")
    out = tmp_path / "keras.json"          # the harness gives reference_keras.py real windows of the sample
    bench("bench", "--skip", "models", "--repeats", 1, "--epochs", 1, "--fast-batch", 0, "--train-windows", 200,
          "--val-windows", 100, "--infer-windows", 200, "--no-compare-threads", "--out", out)
    keras = json.loads(out.read_text())["results"]["lstm_ae_vs_keras"]["keras"]
    assert "skipped" not in keras and keras


def test_ablation_steps_change_the_features(tmp_path):
    out = tmp_path / "ablation.json"
    bench("bench.ablation_flows", "--seeds", 0, "--epochs", 1, "--rows", 600, "--out", out)
    steps = json.loads(out.read_text())["steps"]
    assert len(steps) == 5 and all(0 <= s["mean_roc_auc"] <= 1 for s in steps)
    # the first step has neither port nor rarity features, the last has both: the patch took effect
    assert steps[0]["features"] < steps[1]["features"] < steps[2]["features"] < steps[3]["features"]


def test_serve_bench(tmp_path):
    out = tmp_path / "serve.json"
    bench("bench.serve", "--seconds", 0.5, "--warmup", 0.2, "--repeats", 1, "--batch", 10, "--clients", 1,
          "--single", 5, "--entities", 10, "--max-queue", 64, "--overload-procs", 1, "--overload-conns", 2,
          "--models", "dense-ae", "--epochs", 1, "--out", out)
    entry = json.loads(out.read_text())["models"]["dense-ae"]
    assert entry["batched"]["records_per_second"]["best"] > 0
    assert entry["overload"]["server_alive_after"] and entry["overload"]["counts_add_up"]


def test_pcap_bench(tmp_path):
    out = tmp_path / "pcap.json"
    bench("bench.pcap", "--connections", 20, "--repeat", 1, "--out", out)
    doc = json.loads(out.read_text())
    assert doc["input"].startswith("SYNTHETIC") and doc["flows"] > 0 and doc["packets"] > 0
    assert doc["results"]["deepids_capture_flows"]["packets_per_s"] > 0


OTRF = SAMPLES / "otrf"      # five real OTRF recordings, one of them an Empire one with agent metadata


def test_hunt_otrf_bench(tmp_path):
    out = tmp_path / "hunt_otrf.json"
    bench("bench.hunt_otrf", "--otrf", OTRF, "--folds", 1, "--train-events", 500, "--epochs", 1, "--out", out)
    doc = json.loads(out.read_text())
    assert doc["attack_events"] > 0 and doc["command"].endswith("--out " + str(out))
    assert {"rarity-baseline", "dense-ae"} <= set(doc["overall_folds"])


def test_hunt_evtx_bench(tmp_path):
    logs = tmp_path / "windows"     # the layout the bench expects, holding the shipped real recordings
    (logs / "evtx_attack_samples").mkdir(parents=True)
    (logs / "evtx_benign_and_parser_samples").mkdir()
    (logs / "otrf_security_datasets").symlink_to(OTRF)
    (logs / "evtx_attack_samples" / "new-user-security.evtx").symlink_to(SAMPLES / "evtx" / "new-user-security.evtx")
    (logs / "evtx_benign_and_parser_samples" / "Security_short_selected.evtx").symlink_to(
        SAMPLES / "evtx" / "Security_short_selected.evtx")
    out = tmp_path / "hunt_evtx.json"
    bench("bench.hunt_evtx", "--logs", logs, "--train-events", 500, "--epochs", 1, "--out", out)
    doc = json.loads(out.read_text())
    assert doc["attack_events"] > 0 and "dense-ae" in doc["models"]


def test_hunt_speed_bench(tmp_path):
    out = tmp_path / "hunt_speed.json"
    bench("bench.hunt_speed", "--otrf", OTRF, "--models", "event-rarity,gan", "--latent-search-events", 50,
          "--epochs", 1, "--out", out)
    models = json.loads(out.read_text())["models"]
    gan = models["gan"]
    assert gan["epochs_run"] == 1 and set(gan["score"]) == {"reconstruction", "latent-search"}
    rarity = models["event-rarity"]
    assert rarity["scoring"]["events_per_cpu_second"] > 0 and rarity["train_cpu_seconds"] >= 0
    # end to end as the CLI runs it: every event of the sample read, scored and written
    assert rarity["end_to_end"]["score"]["events"] == gan["end_to_end"]["score"]["events"] > 0


def test_ray_score_bench(tmp_path):
    modes = ["single"] + (["ray1"] if has("ray") else [])
    out = tmp_path / "ray.json"
    bench("bench.ray_score", "--rows", 2000, "--files", 2, "--modes", *modes, "--cpus", 1, "--chunk-rows", 500,
          "--out", out)
    runs = json.loads(out.read_text())["runs"]
    assert [r["mode"] for r in runs] == modes and all(r["records"] == 2000 for r in runs)


def test_two_stage(tmp_path):
    """bench.two_stage --quick: 2 epochs, one family left out; every option measured, one chosen."""
    out = tmp_path / "two_stage.json"
    proc = bench("bench.two_stage", "--quick", "--out", out, timeout=900)
    result = json.loads(out.read_text())
    variants = {f"{s}/{n}" for s in ("supervised", "hybrid", "hybrid q0.998") for n in ("embedding", "confidence")}
    assert set(result["test"]["end_to_end"]) == variants and result["chosen"] in variants
    lofo = result["test"]["leave_one_family_out"]
    assert len(lofo) == 1 and all(v["flows"] >= 1 for v in lofo.values())
    assert "validation split of the training part" in result["protocol"]["tuning"]
    assert "| stage one / novelty |" in proc.stdout and "at which stage one flags 80 %" in proc.stdout
    for family in lofo.values():         # the false-alarm cost of flagging 80 % of the family left out
        assert all(0 <= family[v]["false_alarms_per_10k_for_80pct"] <= 1e4 for v in variants)
    # --seeds' choice, on runs written before (one here): the rule on the mean of the validation parts
    combined = bench("bench.two_stage", "--combine", out, "--out", tmp_path / "seeds.json")
    summary = json.loads((tmp_path / "seeds.json").read_text())["over_seeds"]
    assert summary["seeds"] == [0] and summary["chosen"] == result["chosen"] and set(summary["test"]) == variants
    assert "macro-F1 min" in combined.stdout


def test_two_stage_from_one_file_to_another(tmp_path):
    """bench.two_stage --data TRAIN --test TEST --quick: every configuration end to end, no choice."""
    out = tmp_path / "two_stage_files.json"
    samples = REPO / "data" / "samples"
    proc = bench("bench.two_stage", "--quick", "--data", samples / "cicids2017" / "cicids2017_sample.csv.gz",
                 "--test", samples / "cse-cic-ids2018" / "ids2018_sample.csv.gz", "--out", out, timeout=900)
    result = json.loads(out.read_text())
    assert len(result["test"]["end_to_end"]) == 6 and "leave_one_family_out" not in result["test"]
    assert all(0 <= m["macro_f1"] <= 1 for m in result["test"]["end_to_end"].values())
    assert "| stage one / novelty | macro-F1 |" in proc.stdout


def test_two_stage_context(tmp_path):
    """bench.two_stage_context --quick: with and without entity context, one family left out, on the lab capture."""
    out = tmp_path / "two_stage_context.json"
    proc = bench("bench.two_stage_context", "--quick", "--out", out, timeout=900)
    result = json.loads(out.read_text())
    assert set(result["results"]) == {"supervised", "hybrid", "supervised + entity context", "hybrid + entity context"}
    for entry in result["results"].values():
        assert 0 <= entry["end_to_end"]["macro_f1"] <= 1 and len(entry["lofo"]) == 1
        assert all(0 <= x["flagged"] <= 1 and x["flows"] >= 20 for x in entry["lofo"].values())
    assert "| stage one | macro-F1 |" in proc.stdout
