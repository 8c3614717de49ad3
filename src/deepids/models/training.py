"""The one training loop every torch model in deepids uses.

A model supplies its network and its loss (`loss_fn(network, batch) -> scalar tensor`); this
loop supplies the rest: seeding, device placement, Adam, mini-batches, early stopping on
validation loss with the best weights restored, a history, checkpoints and resuming.
Models with an unusual update (a GAN's alternating steps) pass their own `step_fn`; a
`step_fn` that keeps state of its own (its optimizers) exposes `state_dict()` and
`load_state_dict(state)` so that checkpoints hold it too.

Progress is the caller's. The loop never prints and builds no progress bar: it logs each epoch
(`logging`, logger `deepids.models.training`; INFO with `verbose`, DEBUG otherwise) and, when
given `TrainingConfig.progress`, calls it once after every epoch with an `EpochReport`:

    def progress(report: EpochReport) -> None:
        # report.description, report.epoch (1-based, epochs done so far), report.epochs (planned),
        # report.train_loss, report.val_loss, report.best_val_loss, report.seconds (this epoch)
        bar.update(task, completed=report.epoch, total=report.epochs)

Every model's `fit(..., progress=callable)` passes it here (the CLI draws its bar this way).
An exception raised by `progress` stops training after that epoch's checkpoint is written.

Checkpoints (`TrainingConfig.checkpoint_dir`): after every epoch the loop writes
`checkpoint.safetensors` there (see `models/checkpoint.py`: weights, best weights, optimizer
and step states, RNG states, epoch, early-stopping state and history; no pickle), atomically.
With `resume=True` it starts from that file, and the run ends where an uninterrupted run with
the same seed ends.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, ...]
BatchSource = Callable[[np.random.Generator | None], Iterable[Batch]]


def resolve_device(device: str | None = None) -> torch.device:
    """`cuda` when present unless told otherwise; a device this host lacks falls back to the CPU (logged)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available() or (
            resolved.type == "mps" and not torch.backends.mps.is_available()):
        if device not in _WARNED_DEVICES:
            _WARNED_DEVICES.add(device)
            log.warning("device %r is not available on this host; using the CPU", device)
        return torch.device("cpu")
    return resolved


_WARNED_DEVICES: set[str] = set()


@contextmanager
def torch_threads(n: int | None):
    """Run the block with `n` torch intra-op threads (None or 0: leave as is), then restore."""
    previous = torch.get_num_threads()
    if not n or n == previous:
        yield previous
        return
    torch.set_num_threads(n)
    try:
        yield previous
    finally:
        torch.set_num_threads(previous)


def run_batches(fn: Callable[[int, int], None], n: int, batch_size: int, device: torch.device) -> None:
    """Call `fn(start, stop)` for consecutive batches of [0, n); `fn` writes its own results.

    On a CPU with several torch threads, the batches run on that many Python threads with one
    torch thread each instead: a small network's operations are too short to split across
    cores, and per-operation thread barriers stall whenever the host is busy (measured in
    bench/: up to 4x slower on a loaded 2-core host, never faster). torch releases the GIL
    inside its operations, so the Python threads run in parallel.
    """
    starts = range(0, n, batch_size)
    workers = min(torch.get_num_threads(), len(starts))
    if device.type != "cpu" or workers <= 1:
        for start in starts:
            fn(start, min(start + batch_size, n))
        return
    with torch_threads(1), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deepids-infer") as pool:
        for done in [pool.submit(fn, start, min(start + batch_size, n)) for start in starts]:
            done.result()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class EpochReport:
    """What the loop tells `progress` after each epoch."""

    description: str
    epoch: int                 # epochs done so far (1-based), resumed ones included
    epochs: int                # epochs planned
    train_loss: float
    val_loss: float
    best_val_loss: float
    seconds: float             # wall time of this epoch, validation included


@dataclass
class TrainingConfig:
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 3            # epochs without validation improvement before stopping
    min_delta: float = 0.0
    seed: int = 0
    device: str | None = None
    verbose: bool = True         # log each epoch at INFO (DEBUG otherwise)
    # torch threads while training on a CPU; None: one thread for batches of up to 256 (a small
    # batch's operations are too short to split across cores, and the per-operation barriers
    # stall on a busy host; measured in bench/), torch's setting otherwise
    threads: int | None = None
    progress: Callable[[EpochReport], None] | None = None
    checkpoint_dir: str | Path | None = None
    resume: bool = False
    # what a checkpoint must match to be resumed (the model and its parameters, the data's size)
    fingerprint: dict = field(default_factory=dict)

    def cpu_threads(self) -> int | None:
        if self.threads is not None:
            return self.threads
        return 1 if self.batch_size <= 256 else None


@dataclass
class TrainingHistory:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    stopped_early: bool = False
    seconds: float = 0.0
    samples_per_second: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)   # wall time of each epoch, validation included
    resumed_from_epoch: int = 0

    def to_dict(self) -> dict:
        out = {
            "train_loss": [round(x, 6) for x in self.train_loss],
            "val_loss": [round(x, 6) for x in self.val_loss],
            "best_epoch": self.best_epoch,
            "best_val_loss": None if math.isinf(self.best_val_loss) else round(self.best_val_loss, 6),
            "stopped_early": self.stopped_early,
            "seconds": round(self.seconds, 3),
            "samples_per_second": round(self.samples_per_second, 1),
        }
        if self.resumed_from_epoch:
            out["resumed_from_epoch"] = self.resumed_from_epoch
        return out


@dataclass
class LoopState:
    """Everything the loop carries from one epoch to the next (what a checkpoint holds)."""

    rng: np.random.Generator
    history: TrainingHistory = field(default_factory=TrainingHistory)
    best_state: dict | None = None
    bad_epochs: int = 0

    @property
    def epoch(self) -> int:
        return len(self.history.train_loss)


def default_step(network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: Callable[[torch.nn.Module, Batch], torch.Tensor], batch: Batch) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(network, batch)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def fit_network(
    network: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, Batch], torch.Tensor],
    train_batches: BatchSource,
    val_batches: BatchSource | None,
    config: TrainingConfig,
    *,
    n_train: int,
    step_fn: Callable | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    description: str = "training",
) -> TrainingHistory:
    """Train `network` in place; returns the history. Best validation weights are restored."""
    from deepids.models.checkpoint import Checkpoints

    seed_everything(config.seed)
    device = resolve_device(config.device)
    network.to(device)
    # fused Adam: one kernel for all parameters instead of a handful of operations per tensor
    optimizer = optimizer or torch.optim.Adam(network.parameters(), lr=config.learning_rate,
                                              fused=device.type in ("cpu", "cuda"))
    step_fn = step_fn or default_step
    state = LoopState(rng=np.random.default_rng(config.seed))
    checkpoints = Checkpoints(config.checkpoint_dir, config.fingerprint) if config.checkpoint_dir else None
    if checkpoints is not None and config.resume:
        if checkpoints.restore(network, optimizer, step_fn, state, device):
            state.history.resumed_from_epoch = state.epoch
            log.info("%s: resuming after epoch %d from %s", description, state.epoch, checkpoints.path)
    previous_seconds = state.history.seconds
    started = time.perf_counter()
    level = logging.INFO if config.verbose else logging.DEBUG
    with torch_threads(config.cpu_threads() if device.type == "cpu" else None):
        while not state.history.stopped_early and state.epoch < config.epochs:
            report = _run_epoch(network, loss_fn, train_batches, val_batches, config, state, step_fn, optimizer,
                                device, description)
            state.history.seconds = previous_seconds + time.perf_counter() - started
            if checkpoints is not None:
                checkpoints.save(network, optimizer, step_fn, state)
            log.log(level, "%s: epoch %d/%d loss %.5f val %.5f best %.5f (%.1fs)", description, report.epoch,
                    report.epochs, report.train_loss, report.val_loss, report.best_val_loss, report.seconds)
            if config.progress is not None:
                config.progress(report)
    if state.best_state is not None:
        network.load_state_dict(state.best_state)
    network.eval()
    history = state.history
    history.seconds = previous_seconds + time.perf_counter() - started
    history.samples_per_second = n_train * len(history.train_loss) / max(history.seconds, 1e-9)
    return history


def _run_epoch(network, loss_fn, train_batches, val_batches, config: TrainingConfig, state: LoopState, step_fn,
               optimizer, device: torch.device, description: str) -> EpochReport:
    """One pass over the training batches, the validation loss, and the early-stopping bookkeeping."""
    history = state.history
    epoch_started = time.perf_counter()
    network.train()
    total, count = 0.0, 0
    for batch in train_batches(state.rng):
        batch = tuple(b.to(device, non_blocking=True) for b in batch)
        total += step_fn(network, optimizer, loss_fn, batch) * len(batch[0])
        count += len(batch[0])
    history.train_loss.append(total / max(count, 1))
    val = evaluate_loss(network, loss_fn, val_batches, device) if val_batches else history.train_loss[-1]
    history.val_loss.append(val)
    history.epoch_seconds.append(time.perf_counter() - epoch_started)
    if val < history.best_val_loss - config.min_delta:
        history.best_val_loss, history.best_epoch = val, state.epoch
        state.best_state = copy.deepcopy(network.state_dict())
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1
    if state.bad_epochs >= config.patience:
        history.stopped_early = True
    return EpochReport(description, state.epoch, config.epochs, history.train_loss[-1], val,
                       history.best_val_loss, history.epoch_seconds[-1])


@torch.inference_mode()
def evaluate_loss(network: torch.nn.Module, loss_fn, batches: BatchSource, device: torch.device) -> float:
    network.eval()
    total, count = 0.0, 0
    for batch in batches(None):
        batch = tuple(b.to(device) for b in batch)
        total += float(loss_fn(network, batch)) * len(batch[0])
        count += len(batch[0])
    return total / max(count, 1)


def window_batches(X: torch.Tensor, idx: np.ndarray, batch_size: int, shuffle: bool) -> BatchSource:
    """A batch source gathering windows `X[idx[rows]]` on the fly (never all windows at once)."""
    idx_t = torch.from_numpy(np.ascontiguousarray(idx))

    def source(rng: np.random.Generator | None) -> Iterator[Batch]:
        n = len(idx_t)
        order = torch.from_numpy(rng.permutation(n)) if (shuffle and rng is not None) else torch.arange(n)
        for start in range(0, n, batch_size):
            yield (X[idx_t[order[start:start + batch_size]]],)

    return source


def record_batches(X: torch.Tensor, y: torch.Tensor | None, batch_size: int, shuffle: bool) -> BatchSource:
    """A batch source over single records: (x,) or (x, y) per batch."""

    def source(rng: np.random.Generator | None) -> Iterator[Batch]:
        n = len(X)
        order = torch.from_numpy(rng.permutation(n)) if (shuffle and rng is not None) else torch.arange(n)
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            yield (X[rows],) if y is None else (X[rows], y[rows])

    return source
