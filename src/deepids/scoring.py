"""The one scorer: canonical chunks of any record kind -> one score frame.

Every consumer (``deepids score``, ``evaluate``, ``serve``, ``stream``, ``hunt``) scores through
:class:`ChunkScorer` and names its output with :data:`SCORE_FIELDS`:

``record``
    the record's number: its position in the input, counted from 0 (files: across all files in
    order; a stream: since it started; a service request: within the request body). Rejected
    records keep their number, so numbers of scored records may skip.
the kind's id columns
    (files only) e.g. ``flow_id`` ... ``timestamp``, ``label`` for flows; ``timestamp``, ``host``,
    ``channel``, ``event_id``, ``record_id``, ``user``, ``image``, ``source_file`` for events;
``score``, ``threshold``, ``is_anomaly``
    the anomaly score (higher = more anomalous), the model's threshold, and ``score > threshold``
    as a boolean;
``top_features``
    the features that contributed most to the score, largest first.

Memory is bounded by the chunk size, not the input size: records are read, scored and written
chunk by chunk, for every record kind. State that spans chunks is carried by the scorer: the
model's per-entity history (sequence models get the same windows as if the whole input were
scored at once) and the record kind's state (``kind.new_state()``).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import polars as pl

from deepids.errors import ConfigError, InputError, SchemaError
from deepids.io import ReadReport
from deepids.io.schema import LABEL
from deepids.kinds import RecordKind, kind_of_model, kind_of_paths
from deepids.models.base import BaseDetector, Scores

# records per chunk when scoring files: peak memory follows it (the chunk being scored, the one
# read ahead, their features and errors); 100,000 keeps a 5-million-flow CSV under 2 GB (bench/)
SCORING_CHUNK = 100_000
#: the names of a score frame, in order; the record kind's id columns go between record and score
RECORD = "record"
SCORE_FIELDS = (RECORD, "score", "threshold", "is_anomaly", "top_features")
OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


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


ProgressCallback = Callable[[int, Optional[int]], None]


def progress_callback(progress) -> ProgressCallback | None:
    """The caller's ``progress(done, total)``, called after each chunk with the records done and,
    when it can be estimated, about how many there are (None otherwise). Anything not callable
    (the former True/False switch) means none: the library reports progress and never draws it;
    the command's bars are in ``deepids.cli.progress``."""
    return progress if callable(progress) else None


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


class ChunkScorer:
    """One model, the record kind it reads, and the state carried from chunk to chunk.

    ``scores(chunk)`` scores a canonical chunk (the kind's model inputs, the model's per-entity
    history); ``frame(chunk, scores, records)`` is the score frame of :data:`SCORE_FIELDS`. Chunks
    must come in record order.
    """

    def __init__(self, model: BaseDetector, kind: RecordKind | None = None, top_k: int = 3):
        self.model = model
        self.kind = kind or kind_of_model(model)
        self.threshold = float(model._threshold_value())
        self.top_k = top_k
        self.history = model.new_history()
        self.state = self.kind.new_state(model)
        self.records = 0                  # records numbered so far (files)
        self.numbers: np.ndarray | None = None   # the reader's numbers for the chunk being scored

    def scores(self, chunk: pl.DataFrame) -> Scores:
        return self.model.score_chunk(self.kind.model_inputs(chunk, self.state), self.history)

    def frame(self, chunk: pl.DataFrame, scores: Scores, records: np.ndarray | None = None) -> pl.DataFrame:
        """The score frame of a chunk. ``records`` defaults to the numbers the reader gave the
        chunk's rows (their positions among the records read), else the next numbers in order."""
        if records is None and self.numbers is not None and len(self.numbers) == chunk.height:
            records = self.numbers
        if records is None:
            records = np.arange(self.records, self.records + chunk.height, dtype=np.int64)
            self.records += chunk.height
        return score_frame(chunk, scores, self.threshold, self.top_k, records, self.kind.id_columns)


def check_kind(model: BaseDetector, paths) -> RecordKind:
    """The kind the model reads; a SchemaError when the paths hold another kind of record."""
    kind, given = kind_of_model(model), kind_of_paths(paths)
    if kind is not given:
        raise SchemaError(f"the model reads {kind.name}, but {', '.join(map(str, _as_list(paths)))} "
                          f"hold {given.name}: train a model on {given.name} to score them")
    return kind


def scored_chunks(model: BaseDetector, paths, *, layout: str | None = None, label_column: str | None = None,
                  batch_size: int | None = None, progress: ProgressCallback | None = None,
                  require_labels: bool = False, scorer: ChunkScorer | None = None) -> Iterator[tuple[pl.DataFrame, Scores, ReadReport]]:
    """Read `paths` in chunks of the model's record kind and score each: yields (chunk, scores,
    the read report so far). `batch_size` defaults to the kind's chunk size.

    State (sequence models' per-entity history, the kind's state) is carried from chunk to chunk.
    With `require_labels`, unlabelled input is an InputError before any scoring work.
    """
    scorer = scorer or ChunkScorer(model, check_kind(model, paths))
    report_progress = progress_callback(progress)
    read = None
    done = 0
    total = estimate_records(paths) if report_progress else None
    for chunk, report in prefetch(scorer.kind.read_chunks(paths, layout=layout, label_column=label_column,
                                                          batch_size=batch_size)):
        read = report if read is None else read.merge(report)
        if require_labels and LABEL not in chunk.columns:
            raise InputError(f"{', '.join(report.files)} has no label column; evaluating needs labelled data "
                             "(name the column with --label-column)")
        if chunk.height:
            scorer.numbers = report.numbers
            yield chunk, scorer.scores(chunk), read
            done += chunk.height
            if report_progress:
                report_progress(done, total)
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
                label_column: str | None = None, batch_size: int | None = None, top_k: int = 3,
                progress: ProgressCallback | None = None) -> ScoringSummary:
    """Score every record of `paths` (flows or event logs) into `out` (CSV, Parquet or JSON Lines,
    by extension): one row of :data:`SCORE_FIELDS` per record, chunk by chunk."""
    output_format(out)
    scorer = ChunkScorer(model, check_kind(model, paths), top_k=top_k)
    summary = ScoringSummary(output=str(out))
    started = time.perf_counter()
    with ScoreWriter(out) as writer:         # the output appears only when every chunk is written
        for chunk, scores, read in scored_chunks(model, paths, layout=layout, label_column=label_column,
                                                 batch_size=batch_size, progress=progress, scorer=scorer):
            summary.read = read
            if scores is None:
                continue
            frame = scorer.frame(chunk, scores)
            writer.write(frame)
            summary.records += frame.height
            summary.alerts += int(frame.get_column("is_anomaly").sum())
    summary.seconds = time.perf_counter() - started
    return summary


def score_frame(chunk: pl.DataFrame, scores: Scores, threshold: float, top_k: int, record: np.ndarray,
                id_columns: tuple[str, ...] | None = None) -> pl.DataFrame:
    """The score frame of one scored chunk (:data:`SCORE_FIELDS`, the id columns between `record` and
    `score`); `id_columns` default to the flows kind's."""
    if id_columns is None:
        from deepids.kinds import kind_named

        id_columns = kind_named("flows").id_columns
    ids = [c for c in id_columns if c in chunk.columns]
    score = np.asarray(scores.score, dtype=np.float64)
    return pl.DataFrame([
        pl.Series(RECORD, record, dtype=pl.Int64),
        *chunk.select(ids).get_columns(),
        pl.Series("score", score),
        pl.Series("threshold", np.full(len(score), float(threshold))),
        pl.Series("is_anomaly", score > threshold, dtype=pl.Boolean),
        top_feature_series(scores, top_k),
    ])


def top_feature_series(scores: Scores, k: int) -> pl.Series:
    """`Scores.top_features` as a polars List column, built without Python lists per record."""
    n = len(scores.score)
    top = scores.top_feature_indices(k)
    if top.shape[1] == 0:
        return pl.Series("top_features", [[]], dtype=pl.List(pl.Utf8)).gather(np.zeros(n, dtype=np.int64))
    names = pl.Series("top_features", list(scores.feature_names), dtype=pl.Utf8)
    return names.gather(top.ravel()).reshape((n, top.shape[1])).cast(pl.List(pl.Utf8))


def collect_scores(model: BaseDetector, paths, *, layout: str | None = None, label_column: str | None = None,
                   batch_size: int | None = None, progress: ProgressCallback | None = None,
                   require_labels: bool = False) -> CollectedScores:
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
