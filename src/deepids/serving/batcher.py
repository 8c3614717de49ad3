"""The micro-batcher of `deepids serve`: a bounded queue of canonical tables, scored together.

Requests are canonicalised as they arrive, then queued; one worker takes everything queued
(up to ``max_batch_records``), scores it as one table in a worker thread and hands each
request its share. The queue is bounded in records (``max_queue_records``): memory cannot
grow without bound under load.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import polars as pl

from deepids.serving.scorer import LiveScorer

DEFAULT_MAX_QUEUE = 65_536
DEFAULT_MAX_BATCH = 8_192


def _torch_threads() -> int:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else 0


def _same_torch_threads(n: int) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


@dataclass
class _Pending:
    table: pl.DataFrame
    future: asyncio.Future
    n: int


class MicroBatcher:
    """Bounded queue of canonical tables, scored together by one worker."""

    def __init__(self, scorer: LiveScorer, max_queue_records: int = DEFAULT_MAX_QUEUE,
                 max_batch_records: int = DEFAULT_MAX_BATCH):
        self.scorer = scorer
        self.max_queue_records = max_queue_records
        self.max_batch_records = max_batch_records
        self.depth = 0                  # records queued or being scored
        self._queue: deque[_Pending] = deque()
        self._event: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        # torch's thread count (`--threads`) is per OS thread for its OpenMP/BLAS kernels: a new
        # thread starts with one per core. The scoring thread takes the server's own, or else
        # LSTM calls spin a team of threads on a busy host (a p99 of 300 ms instead of 6 ms).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepids-score",
                                            initializer=_same_torch_threads, initargs=(_torch_threads(),))
        # parsing is GIL-bound Python: one thread parses bodies first come, first served (more
        # threads would only interleave them and make each request wait longer)
        self.parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepids-parse")

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._event = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    def idle(self) -> bool:
        """Nothing queued, nothing being scored."""
        return self.depth == 0

    def submit(self, table: pl.DataFrame) -> asyncio.Future | None:
        """Queue a table; None when the queue has no room for it."""
        self.ensure_running()
        n = table.height
        if self.depth + n > self.max_queue_records and self.depth > 0:
            return None
        fut = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(table, fut, n))
        self.depth += n
        self._event.set()
        return fut

    def withdraw(self, future: asyncio.Future) -> bool:
        """Take a table that is still waiting out of the queue (True); False once it is being scored."""
        for p in self._queue:
            if p.future is future:
                self._queue.remove(p)
                self.depth -= p.n
                future.cancel()
                return True
        return False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._event.wait()
            self._event.clear()
            while self._queue:
                batch: list[_Pending] = []
                rows = 0
                while self._queue and (not batch or rows + self._queue[0].n <= self.max_batch_records):
                    p = self._queue.popleft()
                    batch.append(p)
                    rows += p.n
                try:
                    tables = [p.table for p in batch]
                    table = tables[0] if len(tables) == 1 else pl.concat(tables, how="vertical_relaxed")
                    result = await loop.run_in_executor(self._executor, self.scorer.score_table, table)
                except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the server
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(exc)
                else:
                    score, flagged, top = result
                    start = 0
                    for p in batch:
                        stop = start + p.n
                        if not p.future.done():
                            p.future.set_result((score[start:stop], flagged[start:stop], top[start:stop]))
                        start = stop
                finally:
                    self.depth -= rows

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.parser.shutdown(wait=False, cancel_futures=True)
