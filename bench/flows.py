"""Flow-path benchmark: LSTM-AE training and scoring throughput, end-to-end file scoring, peak RSS.

Large inputs are built by RESAMPLING (with replacement) the real rows of the bundled
CICIDS2017 sample; the JSON says so. Run: `python -m bench [--rows N] [--out FILE]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from deepids.demo import SAMPLE, samples_dir
from deepids.features import window_order, windows_by_entity
from deepids.io import read_flows
from deepids.models import LSTMAutoencoder
from deepids.models.training import TrainingConfig, fit_network, window_batches
from deepids.models.lstm_ae import reconstruction_loss


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_network(features: np.ndarray, T: int, n_windows: int) -> dict:
    """Training windows/s for one epoch (batch 64, published settings) and inference windows/s."""
    X = torch.from_numpy(features)
    codes, order = window_order(pl.DataFrame({"i": np.arange(len(features))}), None)
    idx = windows_by_entity(codes, order, T)[:n_windows]
    model = LSTMAutoencoder(sequence_length=T, verbose=False)
    from deepids.models.lstm_ae import LSTMAutoencoderNet

    net = LSTMAutoencoderNet(X.shape[1], T)
    cfg = TrainingConfig(epochs=1, batch_size=64, verbose=False)
    hist = fit_network(net, reconstruction_loss(0.5), window_batches(X, idx, 64, True), None, cfg, n_train=len(idx))
    model.network_ = net
    model.error_scale_ = np.ones(X.shape[1], dtype=np.float32)
    model.feature_names_ = [str(i) for i in range(X.shape[1])]
    started = time.perf_counter()
    model._score_windows(features, idx)
    infer = len(idx) / (time.perf_counter() - started)
    return {"sequence_length": T, "windows": len(idx), "train_windows_per_s": round(hist.samples_per_second, 1),
            "inference_windows_per_s": round(infer, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=200_000, help="rows of the resampled CSV scored end to end")
    ap.add_argument("--out", type=Path, default=Path("bench/results/flows.json"))
    args = ap.parse_args()

    table, _ = read_flows(samples_dir() / SAMPLE)
    result = {"machine": machine(), "data": f"{args.rows:,} rows resampled with replacement from the real "
              f"{SAMPLE} ({table.height:,} rows); not new traffic", "results": {}}
    model = LSTMAutoencoder(sequence_length=10, epochs=3, verbose=False, entity=None).fit(table)
    features = model.preprocessor_.transform(table)
    rng = np.random.default_rng(0)
    big = features[rng.integers(0, len(features), 100_000)]
    result["results"]["network"] = [bench_network(big, 10, 20_000), bench_network(big, 1, 20_000)]

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = model.save(Path(tmp) / "m")
        csv = Path(tmp) / "big.csv"
        table[rng.integers(0, table.height, args.rows)].drop("label").write_csv(csv)
        # end to end in a fresh process so its peak RSS is its own
        code = ("import json,resource,time,sys;from deepids.models import load_model;from deepids.scoring import "
                "score_files;m=load_model(sys.argv[1]);t=time.perf_counter();s=score_files(m,sys.argv[2],sys.argv[3],"
                "progress=False);print(json.dumps({'records':s.records,'seconds':time.perf_counter()-t,"
                "'peak_rss_mb':resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024}))")
        proc = subprocess.run([sys.executable, "-c", code, str(model_dir), str(csv), str(Path(tmp) / "s.parquet")],
                              capture_output=True, text=True, check=True)
        e2e = json.loads(proc.stdout.strip().splitlines()[-1])
        result["results"]["score_file_lstm_ae_T10"] = {
            "records": e2e["records"], "seconds": round(e2e["seconds"], 2),
            "records_per_s": round(e2e["records"] / e2e["seconds"], 1), "peak_rss_mb": round(e2e["peak_rss_mb"], 1),
            "path": "CSV on disk -> read_flows chunks -> features -> windows of 10 -> scores -> Parquet"}
    result["peak_rss_mb_bench_process"] = round(peak_rss_mb(), 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
