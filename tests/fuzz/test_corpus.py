"""Every damaged input, through every entry point: a one-line error (exit 2) or records rejected
and counted; never a traceback.

The corpus (tests/fuzz/corpus/, made by make_corpus.py from the real samples) is run through
`inspect`, `score`, `evaluate`, `train`, `hunt` and `stream` in-process (the same typer app
the console script runs), and posted to the HTTP service. A 50 MB line is made at test time.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepids.cli import app
from deepids.errors import DeepidsError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

CORPUS = Path(__file__).parent / "corpus"
FILES = sorted(p.name for p in CORPUS.iterdir())
LOGS = (".jsonl", ".evtx")


@pytest.fixture(scope="module")
def models(tmp_path_factory, flow_sample, samples_dir):
    from deepids.models import IsolationForestDetector

    root = tmp_path_factory.mktemp("fuzz-models")
    flows = IsolationForestDetector(n_estimators=10, seed=0).fit(flow_sample[:1500]).save(root / "flows")
    r = CliRunner().invoke(app, ["train", "--model", "iforest", "--data", str(samples_dir / "otrf" / "atomic"),
                                 "--out", str(root / "logs")])
    assert r.exit_code == 0, r.output
    out = {"flows": flows, "logs": root / "logs"}
    for prefix, sample in CONNLOG_SAMPLES.items():        # a model per connection-log source
        r = CliRunner().invoke(app, ["train", "--model", "iforest", "--data", str(samples_dir / sample),
                                     "--out", str(root / prefix)])
        assert r.exit_code == 0, r.output
        out[prefix] = root / prefix
    return out


#: damaged connection logs (named by source) are scored with a model of their source
CONNLOG_SAMPLES = {"zeek": "zeek/conn.log", "eve": "suricata/lab_slice_eve.json.gz",
                   "nfdump": "nfdump/lab_slice_nfdump.csv.gz", "nfstream": "nfstream/lab_slice_nfstream.csv.gz"}


def _model_for(name: str, models: dict) -> str:
    prefix = name.split("_", 1)[0]
    if prefix in CONNLOG_SAMPLES:
        return str(models[prefix])
    return str(models["logs" if name.endswith(LOGS) else "flows"])


def _outcome(args: list[str]) -> tuple[int, str]:
    """(exit code, output); fails the test on any exception that is not a user's error."""
    r = CliRunner().invoke(app, args, catch_exceptions=True)
    exc = r.exception
    if exc is not None and not isinstance(exc, (SystemExit, DeepidsError)):
        import traceback

        pytest.fail(f"deepids {' '.join(args[:1])} raised {type(exc).__name__}: {exc}\n"
                    + "".join(traceback.format_exception(exc)[-6:]))
    if isinstance(exc, DeepidsError):
        assert "\n" not in str(exc).strip(), f"a multi-line error: {exc}"
        return 2, str(exc)
    return r.exit_code, r.output


def _commands(name: str, path: Path, models: dict, out: Path) -> dict[str, list[str]]:
    model = _model_for(name, models)
    return {
        "inspect": ["inspect", str(path)],
        "score": ["score", "--model", model, "--data", str(path), "--out", str(out / "scores.csv"), "-q"],
        "evaluate": ["evaluate", "--model", model, "--data", str(path), "-q"],
        "train": ["train", "--model", "iforest", "--data", str(path), "--out", str(out / "model")],
        "hunt": ["hunt", "--model", str(models["logs"]), "--data", str(path), "-q"],
        "stream": ["stream", "--model", model, "--input", str(path), "--alerts", str(out / "alerts.ndjson"),
                   "--scores", str(out / "s.ndjson"), "--summary-json", str(out / "summary.json")],
    }


@pytest.mark.parametrize("name", FILES)
def test_damaged_file_through_every_command(name, models, tmp_path):
    path = CORPUS / name
    for command, args in _commands(name, path, models, tmp_path).items():
        code, output = _outcome(args)
        assert code in (0, 2), f"{command} {name}: exit {code}\n{output}"
        assert "Traceback" not in output
        if command == "stream" and code == 0:
            s = json.loads((tmp_path / "summary.json").read_text())
            assert s["records_read"] == s["records_scored"] + s["records_rejected"], (name, s)
        if command == "score" and code == 0:
            assert (tmp_path / "scores.csv").exists()
        if command == "score" and code == 2:
            assert not (tmp_path / "scores.csv").exists()        # nothing partial left behind
        for leftover in tmp_path.glob(".*.partial"):
            pytest.fail(f"{command} {name} left {leftover.name}")


@pytest.mark.parametrize("kind", ["flows", "logs"])
def test_damaged_files_posted_to_the_service(kind, models):
    from deepids.models import load_model
    from deepids.serving import LiveScorer
    from deepids.serving.service import create_app

    with TestClient(create_app(LiveScorer(load_model(models[kind])), max_body_bytes=1 << 20)) as c:
        for name in FILES:
            body = (CORPUS / name).read_bytes()
            for ctype in ("application/json", "application/x-ndjson", "text/csv"):
                r = c.post("/v1/score", content=body, headers={"content-type": ctype})
                assert r.status_code in (200, 400, 413, 422), (name, ctype, r.status_code, r.text[:300])
                if r.status_code in (200, 422):
                    d = r.json()
                    assert d["scored"] + d["n_rejected"] >= 1
        assert c.get("/healthz").status_code == 200


def test_a_50_mb_line(models, tmp_path, friday_head):
    path = tmp_path / "long_line.csv"
    with open(path, "wb") as fh:
        fh.write(b"\n".join(friday_head[:30]) + b"\n")
        fh.write(b"7" * (50 << 20) + b"\n")
        fh.write(b"\n".join(friday_head[30:]) + b"\n")
    for command, args in _commands(path.name, path, models, tmp_path).items():
        if command in ("hunt", "train", "evaluate"):
            continue                              # the same readers as inspect and score
        code, output = _outcome(args)
        assert code in (0, 2), (command, output)
        if command == "stream":
            s = json.loads((tmp_path / "summary.json").read_text())
            assert s["rejected_reasons"].get("line too long") == 1 and s["records_scored"] == len(friday_head) - 1


@pytest.fixture(scope="module")
def friday_head(samples_dir):
    import gzip

    path = samples_dir / "cicids2017/GeneratedLabelledFlows/Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.head.csv.gz"
    return gzip.open(path, "rb").read().split(b"\n")[:60]
