"""Speed harness for the flow models: training, inference, end-to-end file scoring, peak RSS,
and the ratios to the published Keras LSTM autoencoder (`bench/reference_keras.py`).

Run: `make bench` or `python -m bench [--rows N] [--repeats R] [--big-rows 5000000] ...`
-> bench/results/flows.json (and the same JSON on stdout).

All inputs are REAL rows of the bundled CICIDS2017 sample (8,002 flows), RESAMPLED WITH
REPLACEMENT to the sizes measured; the JSON says so. Resampling repeats real flows: it is no new
traffic, and it measures speed, not detection quality.

The 2-core host is shared, so every timed step runs `--repeats` times; the JSON gives the best
and the median, and `os.getloadavg()` before and after each section.

Sections:
- `lstm_ae_vs_keras`: the LSTM-AE network (T=10, LSTM(64) -> RepeatVector -> LSTM(32) ->
  TimeDistributed(Dense)) at the published settings (Adam 1e-3, MSE, batch 64, no denoising
  noise), trained by deepids' training loop and by Keras on the very same windows: windows/s
  per epoch (steady state: the first epoch, which holds Keras' graph tracing, is left out of the
  median), validation loss after each epoch, seconds to reach Keras' final validation loss.
  Inference on the same windows: deepids' full scoring (reconstruction, per-feature errors,
  score) against Keras `predict` (its default batch of 32, as printed; batch 4096 as context).
  `--fast-batch` (256) and `--fast-lr` (6e-3) add one more deepids run at a changed setting,
  on all threads, with its own ratios; the JSON names the changed settings.
- `models`: for each model, training records/s (on the sample), and end-to-end scoring of a
  CSV on disk into a score file on disk (reading, features, windows, model, writing) in a fresh
  process, with that process's peak RSS.
- `big_file` (`--big-rows`, e.g. 5,000,000): the same end to end on one large CSV, in chunks.
- `stream_training` (`--stream-train-rows`): the autoencoders trained from a large CSV with
  `fit_files` (chunks read every epoch), in a fresh process: time, windows/s, peak RSS.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from deepids.datasets import SAMPLE, samples_dir
from deepids.features import window_order, windows_by_entity
from deepids.features.preprocess import FlowPreprocessor, feature_columns
from deepids.io import read_flows
from deepids.models import MODELS, LSTMAutoencoder
from deepids.models.lstm_ae import LSTMAutoencoderNet
from deepids.models.reconstruction import reconstruction_loss
from deepids.models.training import TrainingConfig, fit_network, torch_threads, window_batches
from deepids.scoring import SCORING_CHUNK

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "reference_keras.py"
DEFAULT_MODELS = ("dense-ae", "lstm-ae", "dnn", "cnn", "iforest", "random-forest")
# short training: the harness measures speed; quality is tested in tests/ and docs/RESULTS.md
QUICK = {"dense-ae": {"epochs": 2}, "lstm-ae": {"epochs": 2}, "dnn": {"epochs": 2}, "cnn": {"epochs": 2},
         "iforest": {}, "random-forest": {"n_estimators": 50},
         "lstm-ae-ensemble": {"n_members": 2, "epochs": 1}, "two-stage": {}}

SCORE_CHILD = r"""
import json, resource, sys, time
from deepids.models import load_model
from deepids.scoring import score_files
t0 = time.perf_counter()
m = load_model(sys.argv[1])
t = time.perf_counter()
r0 = resource.getrusage(resource.RUSAGE_SELF)
from deepids.cli.progress import record_bar
with record_bar(sys.argv[5] == "1") as progress:
    s = score_files(m, sys.argv[2], sys.argv[3], batch_size=int(sys.argv[4]), progress=progress)
r1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(json.dumps({"records": s.records, "rejected": s.to_dict()["records_rejected"], "seconds": time.perf_counter() - t,
                  "cpu_seconds": cpu,
                  "load_seconds": t - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


# ------------------------------------------------------------------------------ the machine
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
            "python": platform.python_version(), "numpy": np.__version__, "polars": pl.__version__,
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeats: int) -> dict:
    """Best and median wall seconds of `repeats` calls."""
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t0)
    return {"best_s": min(seconds), "median_s": statistics.median(seconds), "all_s": [round(s, 4) for s in seconds]}


def rates(n: int, t: dict) -> dict:
    return {"best": round(n / t["best_s"], 1), "median": round(n / t["median_s"], 1)}


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')} load {load()[0]:.1f}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the reference
def reference_python(explicit: str | None) -> tuple[str | None, str]:
    """An interpreter with TensorFlow: --reference-python, $DEEPIDS_REFERENCE_PYTHON, this one, or
    the `.venv-reference` that `make bench-reference` builds. (None, why) when there is none."""
    candidates = [explicit, os.environ.get("DEEPIDS_REFERENCE_PYTHON")]
    if importlib.util.find_spec("tensorflow") is not None:
        candidates.append(sys.executable)
    candidates.append(str(HERE.parent / ".venv-reference" / "bin" / "python"))
    for c in candidates:
        if c and Path(c).exists():
            probe = subprocess.run([c, "-c", "import tensorflow"], capture_output=True, text=True)
            if probe.returncode == 0:
                return c, ""
    return None, ("TensorFlow is not installed (pip install -e '.[reference]', or make bench-reference): "
                  "the Keras reference and the ratios are skipped")


# --------------------------------------------------------------------------------- the data
def resampled_table(table: pl.DataFrame, n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return table[rng.integers(0, table.height, n)]


def write_resampled_csv(source: Path, out: Path, n: int, seed: int = 0, block: int = 500_000) -> None:
    """`n` real rows of `source` drawn with replacement, written as raw CICFlowMeter CSV in blocks
    (so a file of millions of rows never sits in memory)."""
    raw = pl.read_csv(source, infer_schema_length=0)          # every cell as text, as in the file
    rng = np.random.default_rng(seed)
    with open(out, "wb") as fh:
        for start in range(0, n, block):
            raw[rng.integers(0, raw.height, min(block, n - start))].write_csv(fh, include_header=start == 0)


# ---------------------------------------------------------------------- LSTM-AE vs Keras
def lstm_vs_keras(table: pl.DataFrame, args, workdir: Path) -> dict:
    T = 10
    benign = table.filter(pl.col("label") == "benign")
    pre = FlowPreprocessor().fit(benign, feature_columns(table))
    n_total = args.train_windows + args.val_windows + args.infer_windows
    big = resampled_table(benign, n_total, seed=1)
    X = pre.transform(big)
    codes, order = window_order(big, "src_ip")
    idx = windows_by_entity(codes, order, T)
    rng = np.random.default_rng(2)
    perm = rng.permutation(len(idx))
    tr, va = perm[:args.train_windows], perm[args.train_windows:args.train_windows + args.val_windows]
    inf = np.sort(perm[args.train_windows + args.val_windows:])     # scoring sees records in file order
    out: dict = {"windows": {"sequence_length": T, "features": int(X.shape[1]), "train": len(tr), "validation": len(va),
                             "inference": len(inf),
                             "data": f"benign rows of the real {SAMPLE} resampled with replacement, windows of 10 per source IP"},
                 "settings": {"optimizer": "Adam, learning rate 1e-3 (Keras' default)", "loss": "MSE", "batch_size": 64,
                              "noise": 0.0, "epochs": args.epochs,
                              "note": "the published settings for both; deepids' own defaults differ (learning rate "
                                      "3e-3, denoising noise 0.5) and are not used here"}}

    # deepids: the shared training loop, its default threads (1 for batches <= 256)
    Xt = torch.from_numpy(X)
    runs = []
    trained = None
    for threads in (None, torch.get_num_threads()) if args.compare_threads else (None,):
        say(f"deepids training, threads={threads or 'auto'}")
        torch.manual_seed(0)
        net = LSTMAutoencoderNet(X.shape[1], T)
        epochs = args.epochs if threads is None else min(2, args.epochs)   # the other setting: 2 epochs suffice
        cfg = TrainingConfig(epochs=epochs, batch_size=64, learning_rate=1e-3, patience=epochs + 1,
                             verbose=False, threads=threads)
        hist = fit_network(net, reconstruction_loss(0.0), window_batches(Xt, idx[tr], 64, True),
                           window_batches(Xt, idx[va], 4096, False), cfg, n_train=len(tr))
        steady = hist.epoch_seconds[1:] or hist.epoch_seconds
        runs.append({"threads": threads or cfg.cpu_threads() or torch.get_num_threads(),
                     "epoch_seconds": [round(s, 3) for s in hist.epoch_seconds],
                     "val_loss": [round(v, 6) for v in hist.val_loss],
                     "train_windows_per_s": {"best": round(len(tr) / min(steady), 1),
                                             "median": round(len(tr) / statistics.median(steady), 1)},
                     "loadavg": load()})
        trained = trained or net
    net = trained
    out["deepids_training"] = runs

    # deepids at a setting the published code does not use: a larger batch and learning rate on
    # both cores. The same network, loss and windows; the JSON states the changed settings.
    fast = None
    if args.fast_batch:
        say(f"deepids training, batch {args.fast_batch}, learning rate {args.fast_lr}, threads {torch.get_num_threads()}")
        torch.manual_seed(0)
        fast_net = LSTMAutoencoderNet(X.shape[1], T)
        cfg = TrainingConfig(epochs=args.epochs, batch_size=args.fast_batch, learning_rate=args.fast_lr,
                             patience=args.epochs + 1, verbose=False, threads=torch.get_num_threads())
        hist = fit_network(fast_net, reconstruction_loss(0.0), window_batches(Xt, idx[tr], args.fast_batch, True),
                           window_batches(Xt, idx[va], 4096, False), cfg, n_train=len(tr))
        steady = hist.epoch_seconds[1:] or hist.epoch_seconds
        fast = {"changed_settings": {"batch_size": args.fast_batch, "learning_rate": args.fast_lr,
                                     "threads": torch.get_num_threads()},
                "epoch_seconds": [round(s, 3) for s in hist.epoch_seconds],
                "val_loss": [round(v, 6) for v in hist.val_loss],
                "train_windows_per_s": {"best": round(len(tr) / min(steady), 1),
                                        "median": round(len(tr) / statistics.median(steady), 1)},
                "loadavg": load()}
        out["deepids_training_larger_batch"] = fast

    # deepids inference: full scoring of the windows (reconstruction, per-feature errors, scores)
    model = LSTMAutoencoder(sequence_length=T, verbose=False)
    model.network_, model.error_scale_ = net, np.ones(X.shape[1], dtype=np.float32)
    model.feature_names_ = pre.output_names
    model._score_windows(X, idx[inf[:2048]])                      # warm-up
    say("deepids inference")
    infer = {"default_threads": rates(len(inf), timed(lambda: model._score_windows(X, idx[inf]), args.repeats))}
    if args.compare_threads:
        with torch_threads(1):
            infer["one_thread"] = rates(len(inf), timed(lambda: model._score_windows(X, idx[inf]), args.repeats))
    infer["loadavg"] = load()
    out["deepids_inference_windows_per_s"] = infer

    py, why = reference_python(args.reference_python)
    if py is None:
        out["keras"] = {"skipped": why}
        say(why)
        return out
    windows = workdir / "windows.npz"
    np.savez(windows, train=X[idx[tr]], val=X[idx[va]], infer=X[idx[inf]])
    say(f"Keras reference ({py})")
    keras_json = workdir / "keras.json"
    proc = subprocess.run([py, str(REFERENCE), str(windows), str(keras_json), str(args.epochs), str(args.repeats)],
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if proc.returncode != 0:
        out["keras"] = {"failed": proc.stderr.strip().splitlines()[-1:]}
        return out
    keras = json.loads(keras_json.read_text())
    k_steady = keras["epoch_seconds"][1:] or keras["epoch_seconds"]
    keras["train_windows_per_s"] = {"best": round(len(tr) / min(k_steady), 1),
                                    "median": round(len(tr) / statistics.median(k_steady), 1)}
    out["keras"] = keras
    ours = runs[0]
    target = keras["val_loss"][-1]

    def time_to(val_loss: list[float], seconds: list[float]) -> float | None:
        elapsed = 0.0
        for v, s in zip(val_loss, seconds):
            elapsed += s
            if v <= target:
                return round(elapsed, 2)
        return None

    ours_t = time_to(ours["val_loss"], ours["epoch_seconds"])
    keras_t = time_to(keras["val_loss"], keras["epoch_seconds"])
    if fast is not None:
        fast_t = time_to(fast["val_loss"], fast["epoch_seconds"])
        out["ratios_larger_batch_over_keras"] = {
            "changed_settings": fast["changed_settings"],
            "training_windows_per_s_median": round(fast["train_windows_per_s"]["median"] / keras["train_windows_per_s"]["median"], 2),
            "training_windows_per_s_best": round(fast["train_windows_per_s"]["best"] / keras["train_windows_per_s"]["best"], 2),
            "deepids_final_val_loss": fast["val_loss"][-1],
            "deepids_val_loss_equal_or_lower": fast["val_loss"][-1] <= target,
            "seconds_to_keras_final_val_loss": {"deepids": fast_t, "keras": keras_t,
                                                "speed-up": round(keras_t / fast_t, 2) if fast_t and keras_t else None},
        }
    out["ratios_deepids_over_keras"] = {
        "training_windows_per_s_median": round(ours["train_windows_per_s"]["median"] / keras["train_windows_per_s"]["median"], 2),
        "training_windows_per_s_best": round(ours["train_windows_per_s"]["best"] / keras["train_windows_per_s"]["best"], 2),
        "inference_vs_predict_default_batch_median": round(infer["default_threads"]["median"] / keras["predict_windows_per_s_median"], 2),
        "inference_vs_predict_default_batch_best": round(infer["default_threads"]["best"] / keras["predict_windows_per_s_best"], 2),
        "inference_vs_predict_batch4096_best": round(infer["default_threads"]["best"] / keras["predict_batch4096_windows_per_s_best"], 2),
        "keras_final_val_loss": round(target, 6), "deepids_final_val_loss": ours["val_loss"][-1],
        "deepids_val_loss_equal_or_lower": ours["val_loss"][-1] <= target,
        "seconds_to_keras_final_val_loss": {"deepids": ours_t, "keras": keras_t,
                                            "speed-up": round(keras_t / ours_t, 2) if ours_t and keras_t else None},
    }
    return out


TRAIN_CHILD = r"""
import json, resource, sys, time
from deepids.models import MODELS
t = time.perf_counter()
m = MODELS[sys.argv[1]](epochs=int(sys.argv[3]), verbose=False).fit_files(sys.argv[2], chunk_rows=int(sys.argv[4]))
s = m.training_summary_
print(json.dumps({"seconds": time.perf_counter() - t, "records": s["records"], "train_windows": s["train_windows"],
                  "validation_windows": s["validation_windows"], "epochs": len(s["history"]["train_loss"]),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def stream_training(csv: Path, rows: int, models: list[str], epochs: int, chunk_rows: int) -> dict:
    """`fit_files` on a CSV on disk, in a fresh process per model: time, windows/s, peak RSS."""
    out = {"rows": rows, "csv_bytes": csv.stat().st_size, "epochs": epochs, "chunk_rows": chunk_rows,
           "data": "real rows resampled with replacement", "models": {}}
    for name in models:
        say(f"{name}: training streamed from the {rows:,}-row CSV")
        proc = subprocess.run([sys.executable, "-c", TRAIN_CHILD, name, str(csv), str(epochs), str(chunk_rows)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            out["models"][name] = {"failed": proc.stderr.strip().splitlines()[-1:]}
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        # one pass reads the file for the feature sample, then one pass per epoch
        r["records_per_s_all_passes"] = round(r["records"] * (r["epochs"] + 1) / r["seconds"], 1)
        r["train_windows_per_s"] = round(r["train_windows"] * r["epochs"] / r["seconds"], 1)
        r["loadavg"] = load()
        out["models"][name] = r
    return out


# ---------------------------------------------------------------------- models end to end
def score_file(model_dir: Path, csv: Path, out: Path, batch_size: int, progress: bool = False) -> dict:
    proc = subprocess.run([sys.executable, "-c", SCORE_CHILD, str(model_dir), str(csv), str(out), str(batch_size),
                           "1" if progress else "0"], capture_output=not progress, text=True,
                          stdout=subprocess.PIPE if progress else None)
    if proc.returncode != 0:
        raise RuntimeError(f"scoring {csv} failed: {(proc.stderr or '').strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def end_to_end(model_dir: Path, csv: Path, out: Path, rows: int, batch_size: int, repeats: int,
               progress: bool = False) -> dict:
    runs = [score_file(model_dir, csv, out, batch_size, progress) for _ in range(repeats)]
    assert all(r["records"] == rows for r in runs), "every record must be scored"
    secs = sorted(r["seconds"] for r in runs)
    return {"records": rows, "chunk_rows": batch_size, "output": out.suffix.lstrip("."),
            "records_per_s": {"best": round(rows / secs[0], 1), "median": round(rows / statistics.median(secs), 1)},
            "seconds": [round(r["seconds"], 2) for r in runs],
            # CPU time of all the process's threads: less sensitive to a busy host than wall time
            "records_per_cpu_second_best": round(rows / min(r["cpu_seconds"] for r in runs), 1),
            "peak_rss_mb": {"max": round(max(r["peak_rss_mb"] for r in runs), 1)},
            "output_bytes": out.stat().st_size, "loadavg": load()}


def models_section(table: pl.DataFrame, names: list[str], csv: Path, rows: int, args, workdir: Path) -> dict:
    results = {}
    for name in names:
        cls = MODELS[name]
        say(f"{name}: training on the sample")
        params = dict(QUICK.get(name, {}))
        if "verbose" in cls.__init__.__code__.co_varnames:
            params["verbose"] = False
        model = cls(**params)
        t0 = time.perf_counter()
        model.fit(table)
        fit_s = time.perf_counter() - t0
        summary = getattr(model, "training_summary_", {}) or {}
        hist = summary.get("history", {})
        entry = {"training": {"params": params, "records": table.height, "fit_seconds": round(fit_s, 2),
                              "records_per_s_whole_fit": round(table.height / fit_s, 1),
                              "network_samples_per_s": hist.get("samples_per_second")}}
        model_dir = model.save(workdir / name)
        say(f"{name}: end-to-end scoring of {rows:,} rows")
        entry["score_file"] = end_to_end(model_dir, csv, workdir / f"{name}.{args.output}", rows, args.chunk_rows,
                                         args.repeats)
        entry["score_file"]["path"] = f"CSV on disk -> chunks of {args.chunk_rows:,} -> features -> model -> {args.output} on disk"
        results[name] = entry
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description="deepids speed harness (writes JSON)")
    ap.add_argument("--rows", type=int, default=200_000, help="rows of the resampled CSV scored end to end")
    ap.add_argument("--repeats", type=int, default=3, help="repetitions of each timed step (best and median kept)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the LSTM-AE / Keras training comparison")
    ap.add_argument("--fast-batch", type=int, default=256,
                    help="also train deepids at this batch size on all threads (0: skip); the JSON states it")
    ap.add_argument("--fast-lr", type=float, default=6e-3, help="learning rate of the --fast-batch run")
    ap.add_argument("--train-windows", type=int, default=16_000)
    ap.add_argument("--val-windows", type=int, default=4_000)
    ap.add_argument("--infer-windows", type=int, default=50_000)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"comma-separated; any of {', '.join(MODELS)}")
    ap.add_argument("--chunk-rows", type=int, default=SCORING_CHUNK, help="records per chunk when scoring files")
    ap.add_argument("--output", default="parquet", choices=("parquet", "csv", "jsonl"), help="score file format")
    ap.add_argument("--big-rows", type=int, default=0, help="also score one CSV of this many rows (e.g. 5000000)")
    ap.add_argument("--big-models", default="dense-ae,lstm-ae")
    ap.add_argument("--stream-train-rows", type=int, default=0,
                    help="also train dense-ae and lstm-ae streamed from a CSV of this many rows (e.g. 5000000)")
    ap.add_argument("--stream-train-epochs", type=int, default=1)
    ap.add_argument("--no-compare-threads", dest="compare_threads", action="store_false",
                    help="skip the measurements at other thread settings")
    ap.add_argument("--skip", default="", help="sections to skip: keras,models")
    ap.add_argument("--reference-python", default=None, help="a Python with TensorFlow for the Keras reference")
    ap.add_argument("--out", type=Path, default=Path("bench/results/flows.json"))
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    source = samples_dir() / SAMPLE
    table, _ = read_flows(source)
    result = {"machine": machine(), "command": " ".join(["python -m bench", *sys.argv[1:]]),
              "data": f"real rows of {SAMPLE} ({table.height:,} flows) RESAMPLED WITH REPLACEMENT to the sizes "
                      f"below: repeated real flows, not new traffic", "results": {}}
    with tempfile.TemporaryDirectory(prefix="deepids-bench-") as tmp:
        workdir = Path(tmp)
        if "keras" not in skip:
            result["results"]["lstm_ae_vs_keras"] = lstm_vs_keras(table, args, workdir)
        if "models" not in skip:
            csv = workdir / "resampled.csv"
            say(f"writing {args.rows:,} resampled rows to CSV")
            write_resampled_csv(source, csv, args.rows)
            result["results"]["models"] = models_section(
                table, [m.strip() for m in args.models.split(",") if m.strip()], csv, args.rows, args, workdir)
            csv.unlink()
        if args.big_rows:
            big = workdir / "big.csv"
            say(f"writing {args.big_rows:,} resampled rows to CSV")
            write_resampled_csv(source, big, args.big_rows, seed=3)
            entry = {"rows": args.big_rows, "csv_bytes": big.stat().st_size,
                     "data": "real rows resampled with replacement", "models": {}}
            for name in filter(None, args.big_models.split(",")):
                model_dir = workdir / name
                if not model_dir.exists():
                    cls = MODELS[name]
                    cls(**QUICK.get(name, {}), verbose=False).fit(table).save(model_dir)
                say(f"{name}: scoring the {args.big_rows:,}-row CSV")
                entry["models"][name] = end_to_end(model_dir, big, workdir / f"big-{name}.{args.output}",
                                                   args.big_rows, args.chunk_rows, 1, progress=True)
            result["results"]["big_file"] = entry
        if args.stream_train_rows:
            big = workdir / "train.csv"
            say(f"writing {args.stream_train_rows:,} resampled rows to CSV")
            write_resampled_csv(source, big, args.stream_train_rows, seed=4)
            result["results"]["stream_training"] = stream_training(big, args.stream_train_rows, ["dense-ae", "lstm-ae"],
                                                                   args.stream_train_epochs, args.chunk_rows)
            big.unlink()
    result["machine"]["loadavg_end"] = load()
    result["peak_rss_mb_bench_process"] = round(peak_rss_mb(), 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
