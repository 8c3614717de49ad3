"""Scoring flow files on a Ray cluster: a thin adapter over single-process scoring.

Every record is read by deepids' own reader (`iter_flow_batches`: the same canonical records
and the same rejections as `deepids score`), in chunks, and keyed: `source_file`, `record` (its
number among the file's records, from 0) and the chunk it was read in. Ray Data does not keep
row order, so the key travels with the record to the output. Actors, each holding the model
once (loaded from its JSON + safetensors bytes), score the chunks with the model's own
`score_chunk` through `deepids.scoring.ChunkScorer`, the one scorer `deepids score` runs.
Two pipelines:

- **models that score records alone** (the dense autoencoder): each actor reads whole files
  and scores them chunk by chunk (`FileScorer`); canonical records never leave the actor.
- **sequence models** need each entity's records together and in order: read tasks key every
  record with a hash of its entity (`src_ip`) into one of `partitions` groups, Ray Data
  shuffles the groups to the actors (`groupby().map_groups()`), and each group is scored in
  the order single-process scoring windows in: file by file, chunk by chunk (`chunk_rows`), by
  timestamp within a chunk, each entity's history carried across chunks. Windows are exactly
  those of single-process scoring with the same chunk size.

The scores are written as Parquet files under the output folder (several, one per block), with
`_summary.json` beside them. Counting: each chunk's accepted and rejected records are reported
to a small ledger actor when read, and each scored batch when scored; the summary says whether
scored + rejected = read, file by file.
"""

from __future__ import annotations

import glob
import json
import logging
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from deepids.distributed import require_ray
from deepids.distributed.cluster import cluster_cpus, ray_session
from deepids.errors import ConfigError, DeepidsError, InputError
from deepids.models.base import MODEL_JSON, WEIGHTS, read_model_document

log = logging.getLogger(__name__)

SOURCE_FILE = "source_file"
RECORD = "record"
_FILE_INDEX = "_deepids_file"
_CHUNK = "_deepids_chunk"
_PARTITION = "_deepids_partition"
SUMMARY_FILE = "_summary.json"
DEFAULT_CHUNK_ROWS = 100_000
# CPUs reserved per scoring actor and per read task: fractions, so that N actors on an N-CPU
# node leave room for the read tasks (whole CPUs there can hang the pipeline, ray-project/ray#44687)
ACTOR_CPUS = 0.75
READ_CPUS = 0.25


@dataclass
class ClusterScoringSummary:
    files: int = 0
    records_read: int = 0            # accepted by the reader
    records_scored: int = 0
    records_rejected: int = 0
    rejected_reasons: dict = field(default_factory=dict)
    alerts: int = 0
    threshold: float | None = None
    seconds: float = 0.0
    actors: int = 0
    partitions: int | None = None    # entity partitions (sequence models); None: any batch
    output: str | None = None
    counts_add_up: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["records_per_second"] = round(self.records_scored / self.seconds, 1) if self.seconds else None
        d["seconds"] = round(self.seconds, 3)
        return d


def input_files(data) -> list[str]:
    """Absolute paths of the flow files named by folders, files or glob patterns (sorted per pattern)."""
    from deepids.io.paths import resolve_paths

    items = [data] if isinstance(data, (str, Path)) else list(data)
    expanded: list[str] = []
    for item in items:
        text = str(item)
        if any(ch in text for ch in "*?["):
            found = sorted(glob.glob(text, recursive=True))
            if not found:
                raise InputError(f"{text}: no file matches")
            expanded.extend(found)
        else:
            expanded.append(text)
    return [str(Path(p).resolve()) for p in resolve_paths(expanded)]


def needs_entity_order(model) -> bool:
    """True when a model's score of a record depends on its entity's earlier records."""
    history = model.new_history()
    return history is not None and getattr(history, "sequence_length", None) != 1


def entity_column(model) -> str:
    for part in (model, getattr(model, "detector_", None), *getattr(model, "members_", [])):
        if part is not None and getattr(part, "entity", None):
            return part.entity
    return "src_ip"


# ----------------------------------------------------------------------------- the Ray side
class _Ledger:
    """Counts of every (file, chunk): read (accepted, rejected by reason) and scored.

    Keyed, so a retried task counts once.
    """

    def __init__(self):
        self.read: dict[tuple[int, int], tuple[int, dict]] = {}
        self.scored: dict[tuple[int, int, int], tuple[int, int]] = {}

    def add_read(self, file_index: int, chunk: int, records: int, rejected: dict) -> None:
        self.read[(file_index, chunk)] = (records, rejected)

    def add_scored(self, rows: list[tuple[int, int, int, int, int]]) -> None:
        for file_index, chunk, first, n, alerts in rows:
            self.scored[(file_index, chunk, first)] = (n, alerts)

    def totals(self) -> dict:
        per_file: dict[int, dict] = {}
        for (f, _), (n, rejected) in self.read.items():
            entry = per_file.setdefault(f, {"read": 0, "scored": 0, "alerts": 0, "rejected": Counter()})
            entry["read"] += n
            entry["rejected"].update(rejected)
        for (f, _, _), (n, alerts) in self.scored.items():
            entry = per_file.setdefault(f, {"read": 0, "scored": 0, "alerts": 0, "rejected": Counter()})
            entry["scored"] += n
            entry["alerts"] += alerts
        return {f: {**e, "rejected": dict(e["rejected"])} for f, e in per_file.items()}


def keyed_chunks(file_index: int, path: str, *, layout, label_column, chunk_rows: int, ledger, entity: str | None,
                 partitions: int | None):
    """One file's canonical chunks, every record keyed (see the module docstring); counts go to `ledger`."""
    import ray

    from deepids.io import iter_flow_batches

    offset = 0
    for chunk_no, (chunk, report) in enumerate(iter_flow_batches(path, layout=layout, label_column=label_column,
                                                                 batch_size=chunk_rows)):
        ray.get(ledger.add_read.remote(file_index, chunk_no, chunk.height, dict(report.rejected)))
        if not chunk.height:
            continue
        keys = [pl.lit(str(path)).alias(SOURCE_FILE),
                pl.int_range(offset, offset + chunk.height, dtype=pl.Int64).alias(RECORD),
                pl.lit(file_index, dtype=pl.Int32).alias(_FILE_INDEX),
                pl.lit(chunk_no, dtype=pl.Int32).alias(_CHUNK)]
        if partitions:
            key = pl.col(entity).cast(pl.Utf8).fill_null("") if entity and entity in chunk.columns else pl.lit("")
            keys.append((key.hash(seed=0) % partitions).cast(pl.Int32).alias(_PARTITION))
        offset += chunk.height
        yield chunk.with_columns(keys)


def _read_files(items: dict, **options):
    """Ray Data UDF (tasks): the keyed canonical chunks of the files in `items`."""
    for file_index, path in zip(items["file_index"], items["path"]):
        for frame in keyed_chunks(int(file_index), str(path), **options):
            yield frame.to_arrow()


class PartitionScorer:
    """Ray Data actor: loads the model once and scores batches of keyed canonical records with the
    one scorer of single-process scoring (`deepids.scoring.ChunkScorer`).

    With `in_order` (sequence models) a batch is one entity partition: it is scored chunk by
    chunk in single-process order, each entity's history carried across chunks.
    """

    def __init__(self, model_files: dict[str, bytes], *, top_k: int, in_order: bool, ledger, threads: int = 1,
                 read_options: dict | None = None):
        import torch

        from deepids.models import load_model
        from deepids.scoring import ChunkScorer

        torch.set_num_threads(max(1, threads))
        with tempfile.TemporaryDirectory(prefix="deepids-model-") as tmp:
            for name, data in model_files.items():
                (Path(tmp) / name).write_bytes(data)
            self.model = load_model(tmp)
        self.scorer = ChunkScorer(self.model, top_k=top_k)
        self.in_order, self.ledger, self.read_options = in_order, ledger, read_options

    def __call__(self, batch):
        return self.score(pl.from_arrow(batch)).to_arrow()

    def _fresh_state(self) -> None:
        self.scorer.history = self.model.new_history()
        self.scorer.state = self.scorer.kind.new_state(self.model)

    def score(self, df: pl.DataFrame) -> pl.DataFrame:
        import ray

        if self.in_order:
            df = df.sort([_FILE_INDEX, _CHUNK, RECORD])
            parts = df.partition_by([_FILE_INDEX, _CHUNK], maintain_order=True)
        else:
            parts = [df]
        self._fresh_state()                      # a partition holds its entities' whole history
        frames, counts = [], []
        for part in parts:
            if not self.in_order:
                self._fresh_state()
            frame = self.scorer.frame(part, self.scorer.scores(part), part.get_column(RECORD).to_numpy())
            frames.append(frame.with_columns(part.get_column(SOURCE_FILE), part.get_column(_FILE_INDEX),
                                             part.get_column(_CHUNK)))
        out = pl.concat(frames, how="vertical_relaxed")
        for row in out.group_by([_FILE_INDEX, _CHUNK]).agg(
                pl.col(RECORD).min().alias("first"), pl.len().alias("n"),
                pl.col("is_anomaly").sum().alias("alerts")).iter_rows():
            counts.append(tuple(int(v) for v in row))
        ray.get(self.ledger.add_scored.remote(counts))
        columns = [SOURCE_FILE, *[c for c in out.columns if c not in (SOURCE_FILE, _FILE_INDEX, _CHUNK)]]
        return out.select(columns)


class FileScorer(PartitionScorer):
    """Ray Data actor for models that score records alone: reads its files itself and scores them
    chunk by chunk (the next chunk read ahead in a thread, as `deepids score` does), so that
    canonical records never travel through the object store."""

    def __call__(self, items):
        from deepids.scoring import prefetch

        for file_index, path in zip(items["file_index"], items["path"]):
            for frame in prefetch(keyed_chunks(int(file_index), str(path), **self.read_options)):
                yield self.score(frame).to_arrow()


# ----------------------------------------------------------------------------- the driver
def model_files(model_dir: str | Path) -> dict[str, bytes]:
    """The saved model's two files as bytes (validated first), shipped to the actors.

    The model therefore need not be on storage the nodes share.
    """
    read_model_document(model_dir)
    return {name: (Path(model_dir) / name).read_bytes() for name in (MODEL_JSON, WEIGHTS)}


def score_files_ray(model_dir: str | Path, data, out_dir: str | Path, *, address: str | None = None,
                    num_cpus: int | None = None, actors: int | None = None, cpus_per_actor: float = ACTOR_CPUS,
                    chunk_rows: int | None = DEFAULT_CHUNK_ROWS, partitions: int | None = None,
                    layout: str | None = None, label_column: str | None = None, top_k: int = 3,
                    progress: bool = False) -> ClusterScoringSummary:
    """Score every record of `data` (folders, files, globs) on a Ray cluster into Parquet files under `out_dir`.

    `address`: None starts a local cluster on loopback (`num_cpus` CPUs), "auto" or
    "ray://host:10001" joins a running one. `actors` scoring actors (default: one per cluster
    CPU) with `cpus_per_actor` each; sequence models are partitioned into `partitions` entity
    groups (default 4 per actor). Input files and `out_dir` must be on storage every node sees.
    """
    from deepids.models import load_model

    chunk_rows = DEFAULT_CHUNK_ROWS if chunk_rows is None else chunk_rows
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be at least 1, got {chunk_rows}")
    if not 0 < cpus_per_actor:
        raise ConfigError(f"cpus_per_actor must be positive, got {cpus_per_actor}")
    files = input_files(data)
    model = load_model(model_dir)
    model._threshold_value()                      # a model without a threshold fails here, not on the cluster
    shipped = model_files(model_dir)
    in_order = needs_entity_order(model)
    out = Path(out_dir).resolve()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; score into a new folder")
    ray = require_ray()
    started = time.perf_counter()
    with ray_session(address, num_cpus=num_cpus):
        _quiet_ray_data(progress)
        n_actors = actors or max(1, int(cluster_cpus()))
        if partitions is None and in_order:
            partitions = 4 * n_actors
        if partitions is not None and partitions < 1:
            raise ConfigError(f"partitions must be at least 1, got {partitions}")
        ledger = ray.remote(num_cpus=0)(_Ledger).remote()
        files_ds = ray.data.from_items([{"file_index": i, "path": p} for i, p in enumerate(files)],
                                       override_num_blocks=len(files))
        read_options = dict(layout=layout, label_column=label_column, chunk_rows=chunk_rows, ledger=ledger,
                            entity=entity_column(model) if in_order else None,
                            partitions=partitions if in_order else None)
        scorer = dict(fn_constructor_kwargs=dict(model_files=shipped, top_k=top_k, in_order=in_order, ledger=ledger,
                                                 threads=max(1, round(cpus_per_actor)), read_options=read_options),
                      compute=ray.data.ActorPoolStrategy(size=n_actors), num_cpus=cpus_per_actor)
        if in_order:          # read tasks -> shuffle by entity partition -> actors
            keyed = files_ds.map_batches(_read_files, batch_size=1, num_cpus=READ_CPUS, fn_kwargs=read_options)
            scored = keyed.groupby(_PARTITION).map_groups(PartitionScorer, batch_format="pyarrow", **scorer)
        else:                 # actors read and score whole files
            scored = files_ds.map_batches(FileScorer, batch_size=1, **scorer)
        try:
            scored.write_parquet(str(out))
        except Exception as exc:                  # a user's mistake met on a worker: one line, as locally
            raise _user_error(exc) or exc
        totals = ray.get(ledger.totals.remote())
    summary = _summarise(files, totals, out, n_actors, partitions if in_order else None)
    summary.threshold = model._threshold_value()
    summary.seconds = time.perf_counter() - started
    (out / SUMMARY_FILE).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    if not summary.counts_add_up:
        log.error("counts do not add up: read %d, scored %d", summary.records_read, summary.records_scored)
    return summary


def _summarise(files: list[str], totals: dict, out: Path, n_actors: int,
               partitions: int | None) -> ClusterScoringSummary:
    summary = ClusterScoringSummary(files=len(files), output=str(out), actors=n_actors, partitions=partitions)
    rejected: Counter = Counter()
    add_up = len(totals) == len(files)
    for entry in totals.values():
        summary.records_read += entry["read"]
        summary.records_scored += entry["scored"]
        summary.alerts += entry["alerts"]
        rejected.update(entry["rejected"])
        add_up = add_up and entry["read"] == entry["scored"]
    summary.records_rejected = sum(rejected.values())
    summary.rejected_reasons = dict(rejected.most_common())
    summary.counts_add_up = add_up
    if summary.records_read == 0:
        raise InputError(f"no records to score in {len(files)} file(s): {summary.records_rejected:,} rejected")
    return summary


def _quiet_ray_data(progress: bool) -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    # a failed task reaches the caller as its exception (a user's mistake: one line); Ray Data's
    # own account of it and its execution notes stay out of the output unless progress is asked for
    logging.getLogger("ray.data").setLevel(logging.INFO if progress else logging.CRITICAL)
    for name in ("print_on_execution_start", "enable_operator_progress_bars"):
        if hasattr(ctx, name):
            setattr(ctx, name, progress)


def _user_error(exc: BaseException) -> DeepidsError | None:
    """The DeepidsError a worker raised, unwrapped from Ray's exceptions (None if there is none)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DeepidsError) and type(exc).__module__.startswith("deepids"):
            # Ray Data appends its retry advice to the message after a newline; deepids' own is one line
            return type(exc)(str(exc.args[0]).split("\n")[0]) if exc.args else exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None
