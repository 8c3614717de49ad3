"""The one training loop every torch model in deepids uses.

A model supplies its network and its loss (`loss_fn(network, batch) -> scalar tensor`); this
loop supplies the rest: seeding, device placement, Adam, mini-batches, a progress bar with
the loss, early stopping on validation loss with the best weights restored, and a history.
Models with an unusual update (a GAN's alternating steps) pass their own `step_fn`.
"""

from __future__ import annotations

import copy
import math
import random
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

Batch = tuple[torch.Tensor, ...]
BatchSource = Callable[[np.random.Generator | None], Iterable[Batch]]


def resolve_device(device: str | None = None) -> torch.device:
    """`cuda` when present unless told otherwise."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
class TrainingConfig:
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    patience: int = 3            # epochs without validation improvement before stopping
    min_delta: float = 0.0
    seed: int = 0
    device: str | None = None
    verbose: bool = True
    # torch threads while training on a CPU; None: one thread for batches of up to 256 (a small
    # batch's operations are too short to split across cores, and the per-operation barriers
    # stall on a busy host; measured in bench/), torch's setting otherwise
    threads: int | None = None

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

    def to_dict(self) -> dict:
        return {
            "train_loss": [round(x, 6) for x in self.train_loss],
            "val_loss": [round(x, 6) for x in self.val_loss],
            "best_epoch": self.best_epoch,
            "best_val_loss": None if math.isinf(self.best_val_loss) else round(self.best_val_loss, 6),
            "stopped_early": self.stopped_early,
            "seconds": round(self.seconds, 3),
            "samples_per_second": round(self.samples_per_second, 1),
        }


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
    seed_everything(config.seed)
    device = resolve_device(config.device)
    network.to(device)
    # fused Adam: one kernel for all parameters instead of a handful of operations per tensor
    optimizer = optimizer or torch.optim.Adam(network.parameters(), lr=config.learning_rate,
                                              fused=device.type in ("cpu", "cuda"))
    step_fn = step_fn or default_step
    rng = np.random.default_rng(config.seed)
    history = TrainingHistory()
    best_state = None
    bad_epochs = 0
    started = time.perf_counter()

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} epochs"),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        disable=not config.verbose, transient=False,
    )
    with progress, torch_threads(config.cpu_threads() if device.type == "cpu" else None):
        task = progress.add_task(description, total=config.epochs, info="")
        for epoch in range(config.epochs):
            epoch_started = time.perf_counter()
            network.train()
            total, count = 0.0, 0
            for batch in train_batches(rng):
                batch = tuple(b.to(device, non_blocking=True) for b in batch)
                total += step_fn(network, optimizer, loss_fn, batch) * len(batch[0])
                count += len(batch[0])
            history.train_loss.append(total / max(count, 1))
            val = evaluate_loss(network, loss_fn, val_batches, device) if val_batches else history.train_loss[-1]
            history.val_loss.append(val)
            history.epoch_seconds.append(time.perf_counter() - epoch_started)
            if val < history.best_val_loss - config.min_delta:
                history.best_val_loss, history.best_epoch = val, epoch + 1
                best_state = copy.deepcopy(network.state_dict())
                bad_epochs = 0
            else:
                bad_epochs += 1
            progress.update(task, advance=1,
                            info=f"loss {history.train_loss[-1]:.4f}  val {val:.4f}  best {history.best_val_loss:.4f}")
            if bad_epochs >= config.patience:
                history.stopped_early = True
                break
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    history.seconds = time.perf_counter() - started
    history.samples_per_second = n_train * len(history.train_loss) / max(history.seconds, 1e-9)
    return history


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
