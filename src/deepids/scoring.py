"""Scoring files in chunks: every record read is scored (or was rejected by the reader with a reason).

Memory is bounded by the chunk size, not the file size: records are read, scored and written
chunk by chunk, and sequence models carry each entity's recent records across chunks so a
record gets the same window as if the whole file were scored at once.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from deepids.errors import ConfigError, InputError
from deepids.io import ReadReport, iter_flow_batches
from deepids.io.schema import LABEL, METADATA_COLUMNS
from deepids.models.base import BaseDetector, Scores

# records per chunk when scoring files: peak memory follows it (the chunk being scored, the one
# read ahead, their features and errors); 100,000 keeps a 5-million-flow CSV under 2 GB (bench/)
SCORING_CHUNK = 100_000
OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


@dataclass
class ScoringSummary:
    records: int = 0
    alerts: int = 0
    seconds: float = 0.0
    read: ReadReport | None = None
    output: str | None = None

    def to_dict(self) -> dict:
        read = self.read.to_dict() if self.read else {}
        return {"records_scored": self.records, "records_rejected": read.get("rejected", 0),
                "rejected_reasons": read.get("rejected_reasons", {}), "alerts": self.alerts,
                "seconds": round(self.seconds, 3),
                "records_per_second": round(self.records / self.seconds, 1) if self.seconds else None,
                "output": self.output, "read": read}


@dataclass
class CollectedScores:
    """Scores of every record of some files, for evaluation."""

    score: np.ndarray
    loss: np.ndarray | None
    labels: np.ndarray | None
    read: ReadReport
    predicted: np.ndarray | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def output_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ConfigError(f"cannot write {path}: use a .csv, .parquet, .jsonl or .ndjson file name")
    return OUTPUT_FORMATS[suffix]


class ScoreWriter:
    """Appends scored chunks to a CSV, Parquet or JSON Lines file, which appears only when complete.

    Chunks go to a temporary file beside `path` (created 0640); `close()` syncs it and renames
    it to `path`, `abort()` (or leaving a ``with`` block by an exception) removes it, and
    `path` keeps what it held before (see `deepids.atomic`). In CSV, text cells that a
    spreadsheet would run as a formula (starting with ``= + - @``, tab or CR) get a leading
    ``'``.
    """

    def __init__(self, path: str | Path):
        from deepids.atomic import atomic_path

        self.path = Path(path)
        self.format = output_format(self.path)
        self._parquet = None
        self._handle = None
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()

    def __enter__(self) -> "ScoreWriter":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None:
            self.close()
        else:
            self.abort(exc)
        return False

    def write(self, df: pl.DataFrame) -> None:
        if self.format == "parquet":
            import pyarrow.parquet as pq

            table = df.to_arrow()
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(str(self._tmp), table.schema)
            self._parquet.write_table(table)
            return
        if self._handle is None:
            self._handle = open(self._tmp, "wb")
            first = True
        else:
            first = False
        if self.format == "csv":
            flat = df.with_columns(pl.col("top_features").list.join("; ")) if "top_features" in df.columns else df
            _defuse_formulas(flat).write_csv(self._handle, include_header=first)
        else:
            df.write_ndjson(self._handle)

    def _close_handles(self) -> None:
        parquet, handle, self._parquet, self._handle = self._parquet, self._handle, None, None
        if parquet is not None:
            parquet.close()
        if handle is not None:
            handle.close()

    def close(self) -> None:
        """Finish the file and put it in place (no records: still a valid empty file)."""
        if self._atomic is None:
            return
        atomic, self._atomic = self._atomic, None
        try:
            self._close_handles()
        except BaseException as exc:
            atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        atomic.__exit__(None, None, None)

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop the partial file; `path` keeps what it held."""
        if self._atomic is None:
            return
        atomic, self._atomic = self._atomic, None
        try:
            self._close_handles()
        except Exception:  # noqa: BLE001 - the file is being thrown away
            pass
        exc = exc or RuntimeError("aborted")
        try:
            atomic.__exit__(type(exc), exc, exc.__traceback__)
        except BaseException as raised:      # the context re-raises what it was given, or explains it
            if raised is not exc:
                raise


_FORMULA = r"^[=+\-@\t\r]"


def _defuse_formulas(df: pl.DataFrame) -> pl.DataFrame:
    text = [c for c, t in df.schema.items() if t == pl.Utf8]
    return df.with_columns(
        pl.when(pl.col(c).str.contains(_FORMULA)).then(pl.lit("'") + pl.col(c)).otherwise(pl.col(c)).alias(c)
        for c in text) if text else df


def _progress(enabled: bool, what: str, total: int | None = None) -> Progress:
    columns = [SpinnerColumn(), TextColumn(f"[bold]{what}")]
    if total:
        columns += [BarColumn(), TextColumn("{task.percentage:>3.0f}% of ~{task.total:,.0f}")]
    return Progress(*columns, TextColumn("{task.completed:,} records"), TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled, transient=True)


def estimate_records(paths) -> int | None:
    """About how many records uncompressed CSV `paths` hold, from the bytes per line of their first
    megabyte (for the progress bar only); None when a file is compressed, not CSV, or a folder."""
    total = 0
    try:
        for path in _as_list(paths):
            path = Path(path)
            if not path.is_file() or path.suffix.lower() not in (".csv", ".txt"):
                return None
            with open(path, "rb") as fh:
                head = fh.read(1 << 20)
            lines = head.count(b"\n")
            if lines < 2:
                return None
            total += int(path.stat().st_size / (len(head) / lines)) - 1
    except OSError:
        return None
    return max(total, 1)


def scored_chunks(model: BaseDetector, paths, *, layout: str | None = None, label_column: str | None = None,
                  batch_size: int = SCORING_CHUNK, progress: bool = True,
                  require_labels: bool = False) -> Iterator[tuple[pl.DataFrame, Scores, ReadReport]]:
    """Read `paths` in chunks and score each: yields (chunk, scores, the read report so far).

    Sequence models carry each entity's recent records from chunk to chunk. With
    `require_labels`, unlabelled input is an InputError before any scoring work.
    """
    history = model.new_history()
    read = None
    started = time.perf_counter()
    done = 0
    total = estimate_records(paths) if progress else None
    with _progress(progress, "scoring", total) as bar:
        task = bar.add_task("scoring", total=total, rate="")
        for chunk, report in prefetch(iter_flow_batches(paths, layout=layout, label_column=label_column,
                                                        batch_size=batch_size)):
            read = report if read is None else read.merge(report)
            if require_labels and LABEL not in chunk.columns:
                raise InputError(f"{', '.join(report.files)} has no label column; evaluating needs labelled data "
                                 "(name the column with --label-column)")
            if chunk.height:
                yield chunk, model.score_chunk(chunk, history), read
                done += chunk.height
                bar.update(task, advance=chunk.height, total=max(total, done) if total else None,
                           rate=f"{done / max(time.perf_counter() - started, 1e-9):,.0f}/s")
    if read is None:
        raise InputError(f"no records to score in {', '.join(map(str, _as_list(paths)))}")
    if done == 0:      # every row rejected: still report why
        yield pl.DataFrame(), None, read


def prefetch(items: Iterator, depth: int = 1) -> Iterator:
    """Iterate `items` in a background thread, `depth` items ahead: the next chunk is read and
    parsed (pyarrow and polars release the GIL) while the current one is scored. Memory grows
    by `depth` chunks. Errors of the reader reach the caller at the item they interrupted."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((True, done))
        except BaseException as exc:          # handed to the consumer, raised there
            slots.put((False, exc))

    worker = threading.Thread(target=produce, name="deepids-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            ok, item = slots.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():              # unblock a producer waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                pass
            worker.join(timeout=0.05)


def score_files(model: BaseDetector, paths, out: str | Path, *, layout: str | None = None,
                label_column: str | None = None, batch_size: int = SCORING_CHUNK, top_k: int = 3,
                progress: bool = True) -> ScoringSummary:
    """Score every record of `paths` into `out` (CSV, Parquet or JSON Lines, by extension)."""
    summary = ScoringSummary(output=str(out))
    threshold = model._threshold_value()
    started = time.perf_counter()
    with ScoreWriter(out) as writer:         # the output appears only when every chunk is written
        for chunk, scores, read in scored_chunks(model, paths, layout=layout, label_column=label_column,
                                                 batch_size=batch_size, progress=progress):
            summary.read = read
            if scores is None:
                continue
            frame = score_frame(chunk, scores, threshold, top_k,
                                np.arange(summary.records, summary.records + chunk.height, dtype=np.int64))
            writer.write(frame)
            summary.records += chunk.height
            summary.alerts += int(frame.get_column("is_anomaly").sum())
    summary.seconds = time.perf_counter() - started
    return summary


def score_frame(chunk: pl.DataFrame, scores: Scores, threshold: float, top_k: int,
                record: np.ndarray) -> pl.DataFrame:
    """The rows written for one scored chunk: record number, identifiers, label, score, alert, top features."""
    keep = [c for c in (*METADATA_COLUMNS, LABEL) if c in chunk.columns]
    return chunk.select(keep).with_columns(
        pl.Series("record", record),
        pl.Series("score", scores.score.astype(np.float64)),
        pl.Series("is_anomaly", scores.score > threshold),
        top_feature_series(scores, top_k),
    ).select(["record", *keep, "score", "is_anomaly", "top_features"])


def top_feature_series(scores: Scores, k: int) -> pl.Series:
    """`Scores.top_features` as a polars List column, built without Python lists per record."""
    n = len(scores.score)
    top = scores.top_feature_indices(k)
    if top.shape[1] == 0:
        return pl.Series("top_features", [[]], dtype=pl.List(pl.Utf8)).gather(np.zeros(n, dtype=np.int64))
    names = pl.Series("top_features", list(scores.feature_names), dtype=pl.Utf8)
    return names.gather(top.ravel()).reshape((n, top.shape[1])).cast(pl.List(pl.Utf8))


def collect_scores(model: BaseDetector, paths, *, layout: str | None = None, label_column: str | None = None,
                   batch_size: int = SCORING_CHUNK, progress: bool = True, require_labels: bool = False) -> CollectedScores:
    """Scores, losses and labels of every record of `paths`, read in chunks."""
    scores, losses, labels, predicted = [], [], [], []
    read = None
    started = time.perf_counter()
    for chunk, result, read in scored_chunks(model, paths, layout=layout, label_column=label_column,
                                             batch_size=batch_size, progress=progress, require_labels=require_labels):
        if result is None:
            continue
        scores.append(result.score)
        if result.loss is not None:
            losses.append(result.loss)
        if result.predicted is not None:
            predicted.append(result.predicted)
        labels.append(chunk.get_column(LABEL).to_numpy() if LABEL in chunk.columns else None)
    if not scores:
        raise InputError(f"no records to score in {', '.join(map(str, _as_list(paths)))}: "
                         f"{read.n_rejected:,} rejected ({', '.join(read.to_dict()['rejected_reasons'])})")
    has_labels = all(lab is not None for lab in labels)
    return CollectedScores(
        score=np.concatenate(scores), loss=np.concatenate(losses) if losses else None,
        labels=np.concatenate(labels).astype(object) if has_labels else None, read=read,
        seconds=time.perf_counter() - started,
        predicted=np.concatenate(predicted).astype(object) if predicted else None)


def _as_list(paths) -> list:
    return list(paths) if isinstance(paths, (list, tuple)) else [paths]
