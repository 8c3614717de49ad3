"""Data-parallel training of the autoencoders on a Ray cluster (Ray Train `TorchTrainer`, DDP).

What single-process streamed training (`ReconstructionDetector.fit_files`, `deepids train
--stream`) does, spread over `num_workers` processes:

- **features once**: one Ray task reads the files in chunks and fits the features on a uniform
  sample of benign records (`_survey_files`, pass 1 of `fit_files`); every worker gets the
  fitted preprocessor, so all of them see the same feature space;
- **the same windows, the same validation set**: every worker reads the files in chunks from the
  cluster's storage and builds each entity's windows with its history carried across chunks,
  holds back the same benign windows for validation as `fit_files` (drawn per chunk from the
  seed), and walks the training batches in the same shuffled order;
- **each batch split across the workers**: worker r computes the loss of rows r/N .. (r+1)/N of
  every batch and DDP averages the gradients, so each step is the step single-process training
  takes on that batch (the same batches, the same number of steps, the same learning rate);
  every worker takes every step, so DDP's all-reduce never waits on one that has run out.
  The work of a step is divided by N; its all-reduce is added (raise `batch_size` on a real
  cluster so that the work outweighs it);
- **the shared training loop**: `fit_network` runs unchanged over the DDP-wrapped network
  (gloo on CPU, NCCL when the workers have GPUs); early stopping sees the same validation loss
  on every worker, so they stop together;
- worker 0 calibrates the threshold on the validation windows and saves the model; the
  result is the ordinary model directory (JSON + safetensors).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from deepids.distributed import require_ray
from deepids.distributed.cluster import cluster_cpus, ray_session
from deepids.distributed.ray_score import input_files
from deepids.errors import ConfigError

log = logging.getLogger(__name__)


def _survey(files: list[str], layout, label_column, chunk_rows: int, sample_rows: int, seed: int,
            clip: float, columns: list[str] | None = None) -> dict:
    """Pass 1 on the cluster: counts and the preprocessor fitted on a sample (JSON-ready)."""
    from deepids.features.preprocess import fit_preprocessor
    from deepids.io import iter_flow_batches
    from deepids.models.reconstruction import _survey_files

    chunks = iter_flow_batches(files, layout=layout, label_column=label_column, batch_size=chunk_rows)
    survey = _survey_files(chunks, sample_rows, np.random.default_rng(seed), columns)
    preprocessor = fit_preprocessor(survey.pop("sample"), survey.pop("columns"), clip=clip)
    read = survey.pop("read")
    return {**survey, "read": read.to_dict() if read is not None else None,
            "feature_sample_rows": min(survey["benign"], sample_rows), "preprocessor": preprocessor.to_dict()}


def batch_slices(batches, rank: int, world: int):
    """Worker `rank`'s share of every batch: rows rank*n/world .. (rank+1)*n/world.

    DDP averages the workers' gradients, so a step sees the gradient of the whole batch, as in
    single-process training. A batch smaller than `world` (a chunk's last) is left out by every worker alike.
    """
    for batch in batches:
        n = len(batch[0])
        if n < world:
            continue
        lo, hi = rank * n // world, (rank + 1) * n // world
        yield tuple(b[lo:hi] for b in batch)


def _rank_sources(model, chunks, max_validation: int, rank: int, world: int):
    """(training batch source, validation batch source, counts) for one worker; see the module docstring."""
    every_batch, validation, counts, val_windows, _ = model._streamed_sources(chunks, max_validation)

    def train(epoch_rng):
        yield from batch_slices(every_batch(epoch_rng), rank, world)

    return train, validation, counts, val_windows


def _train_worker(config: dict) -> None:
    """Ray Train's loop on each worker: build the model, train the DDP network, worker 0 saves."""
    import ray.train
    import ray.train.torch
    import torch

    from deepids.features.preprocess import FlowPreprocessor
    from deepids.io import iter_flow_batches
    from deepids.models import MODELS
    from deepids.models.reconstruction import reconstruction_loss
    from deepids.models.training import TrainingConfig, fit_network, seed_everything

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    model = MODELS[config["model"]](**config["params"])
    model._use_preprocessor(FlowPreprocessor.from_dict(config["survey"]["preprocessor"]))
    chunks = lambda: iter_flow_batches(config["files"], layout=config["layout"],  # noqa: E731
                                       label_column=config["label_column"], batch_size=config["chunk_rows"])
    train, validation, counts, val_windows = _rank_sources(model, chunks, config["max_validation"], rank, world)
    seed_everything(model.seed)                  # the same initial weights on every worker
    network = ray.train.torch.prepare_model(model._build_network(len(model.feature_names_)))
    device = ray.train.torch.get_device()
    training = TrainingConfig(epochs=model.epochs, batch_size=model.batch_size, learning_rate=model.learning_rate,
                              patience=model.patience, seed=model.seed, device=str(device), verbose=False)
    history = fit_network(network, reconstruction_loss(model.noise, model.training_objective()), train, validation,
                          training, n_train=0, description=f"{model.model_name} (ray worker {rank})")
    metrics = {"best_val_loss": history.best_val_loss, "epochs": len(history.train_loss), "rank": rank}
    if rank != 0:
        ray.train.report(metrics)
        return
    model.network_ = getattr(network, "module", network).to("cpu")
    if not counts["validation_windows"]:
        raise ConfigError("no benign record was held back for validation; raise validation_fraction")
    stored = np.concatenate(val_windows)
    val_scores = model._validation_scores(stored, model._stored_index(len(stored) // model.sequence_length))
    model.set_threshold(model.threshold_method, benign_scores=val_scores, percentile=model.threshold_percentile,
                        fpr=model.threshold_fpr, value=model.threshold_value)
    survey = config["survey"]
    model.training_summary_ = {
        "records": survey["records"], "benign_records": survey["benign"], "attack_records_left_out": survey["attacks"],
        **counts, "streamed": {"chunk_rows": config["chunk_rows"], "feature_sample_rows": survey["feature_sample_rows"],
                               "max_validation": config["max_validation"]},
        "distributed": {"engine": "ray", "workers": world, "rows_per_worker_step": model.batch_size / world,
                        "backend": "nccl" if device.type == "cuda" else "gloo"},
        "labelled": survey["labelled"], "features": len(model.feature_names_),
        "dropped_constant": model.preprocessor_.dropped_constant_, "entity": getattr(model, "entity", None),
        "history": history.to_dict(), "read": survey["read"],
    }
    with tempfile.TemporaryDirectory(prefix="deepids-trained-") as tmp:
        model.save(tmp)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def train_ray(model, data, out_dir: str | Path | None = None, *, num_workers: int = 2, address: str | None = None,
              num_cpus: int | None = None, cpus_per_worker: float | None = None, use_gpu: bool | None = None,
              chunk_rows: int = 100_000, sample_rows: int = 200_000, max_validation: int = 20_000,
              layout: str | None = None, label_column: str | None = None, storage_path: str | None = None,
              columns: list[str] | None = None):
    """Train an autoencoder (`model`, unfitted: its hyperparameters) on `data` with `num_workers` DDP workers.

    Returns the trained model, loaded from the directory worker 0 saved (the ordinary model
    directory), and saves it at `out_dir` too when given. `data` and
    `storage_path` (where Ray Train keeps its checkpoint; default a temporary folder, which on
    a multi-node cluster must be storage every node sees) must be readable by every worker.
    `columns`: the feature columns (default: the roles of the first chunk, as `fit_files`).
    """
    from deepids.models import MODELS, load_model
    from deepids.models.reconstruction import ReconstructionDetector

    if not isinstance(model, ReconstructionDetector):
        raise ConfigError(f"--engine ray trains the autoencoders (dense-ae, lstm-ae), not {model.model_name}")
    model._validate_params()
    if model.threshold_method == "best-f1":
        raise ConfigError("best-f1 is not available when training from files; use percentile, fpr or fixed")
    if num_workers < 1:
        raise ConfigError(f"num_workers must be at least 1, got {num_workers}")
    if MODELS.get(model.model_name) is not type(model):
        raise ConfigError(f"{type(model).__name__} is not a registered model")
    files = input_files(data)
    ray = require_ray()
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started = time.perf_counter()
    with ray_session(address, num_cpus=num_cpus), tempfile.TemporaryDirectory(prefix="deepids-ray-train-") as tmp:
        if use_gpu is None:                       # GPUs for every worker, unless the model is told to use the CPU
            use_gpu = (model.device in (None, "auto", "cuda")
                       and ray.cluster_resources().get("GPU", 0) >= num_workers)
        survey = ray.get(ray.remote(num_cpus=0.5)(_survey).remote(
            files, layout, label_column, chunk_rows, sample_rows, model.seed, model.clip, columns))
        per_worker = cpus_per_worker or min(1.0, 0.9 * cluster_cpus() / num_workers)
        params = {k: v for k, v in model.get_params().items() if k != "verbose"}
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={"model": model.model_name, "params": {**params, "verbose": False}, "survey": survey,
                               "files": files, "layout": layout, "label_column": label_column,
                               "chunk_rows": chunk_rows, "max_validation": max_validation},
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": per_worker}),
            run_config=RunConfig(name="deepids-train", storage_path=storage_path or tmp))
        result = trainer.fit()
        if result.error is not None:
            raise result.error
        with result.checkpoint.as_directory() as saved:
            trained = load_model(saved)
    log.info("trained %s on %d Ray workers in %.1f s", model.model_name, num_workers, time.perf_counter() - started)
    if out_dir is not None:
        trained.save(out_dir)
    return trained
