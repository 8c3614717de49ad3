"""What the live scorer counts, exposed in the Prometheus text format by `prometheus_client`.

`ServingMetrics` keeps its counts itself (so that `snapshot()` and `/metrics` agree to the
record) and hands them to one private `CollectorRegistry` as a custom collector; the same
registry carries the process metrics (`process_resident_memory_bytes`, CPU seconds, open file
descriptors ...) and the platform's (`python_info`). Gauges that belong to a running service
(queue depth, entities held) are read at scrape time from callables it registers.

Metric names are stable: ``deepids_records_received_total``, ``deepids_records_scored_total``,
``deepids_records_rejected_total{reason}``, ``deepids_alerts_total``,
``deepids_requests_total{code}``, ``deepids_requests_refused_unread_total{reason}``,
``deepids_requests_unauthorized_total``, ``deepids_batches_total``,
``deepids_batch_records_total``, ``deepids_request_duration_seconds`` (histogram).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from deepids.io.records import Rejection

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# request latency buckets (seconds)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# (name, help, value) of a gauge, or (name, help, label name, {label value: value}) of a labelled counter
Gauge = tuple[str, str, float]
LabelledCounter = tuple[str, str, str, dict[str, float]]


class ServingMetrics:
    """Counters, a latency histogram and service gauges of one live scorer.

    Thread-safe: the scoring thread and the event loop both count.
    """

    def __init__(self, *, process_metrics: bool = True) -> None:
        self._lock = threading.Lock()
        self.records_received = 0
        self.records_scored = 0
        self.alerts = 0
        self.rejected: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.unauthorized = 0
        self.batches = 0
        self.batch_records = 0
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._latency_count = 0
        self.started = time.time()
        self._gauges: list[Callable[[], Iterable[Gauge]]] = []
        self._labelled: list[Callable[[], Iterable[LabelledCounter]]] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)

    # ------------------------------------------------------------------ counting
    def count_received(self, n: int) -> None:
        with self._lock:
            self.records_received += n

    def count_rejected(self, rejected: Sequence[Rejection] | dict[str, int]) -> None:
        with self._lock:
            items = rejected.items() if isinstance(rejected, dict) else ((r.reason, 1) for r in rejected)
            for reason, n in items:
                self.rejected[reason] = self.rejected.get(reason, 0) + n

    def count_refused(self, reason: str) -> None:
        """A request answered 503 before its body was read (its records were never seen)."""
        with self._lock:
            self.refused[reason] = self.refused.get(reason, 0) + 1

    def count_unauthorized(self) -> None:
        """A request refused with 401: no token, or the wrong one."""
        with self._lock:
            self.unauthorized += 1

    def count_scored(self, n: int, alerts: int) -> None:
        with self._lock:
            self.records_scored += n
            self.alerts += alerts
            self.batches += 1
            self.batch_records += n

    def observe_request(self, status: int, seconds: float) -> None:
        with self._lock:
            key = str(status)
            self.requests[key] = self.requests.get(key, 0) + 1
            for i, edge in enumerate(LATENCY_BUCKETS):
                if seconds <= edge:
                    self._buckets[i] += 1
                    break
            else:
                self._buckets[-1] += 1
            self._latency_sum += seconds
            self._latency_count += 1

    @property
    def records_rejected(self) -> int:
        return sum(self.rejected.values())

    def snapshot(self) -> dict:
        with self._lock:
            return {"records_received": self.records_received, "records_scored": self.records_scored,
                    "records_rejected": sum(self.rejected.values()), "rejected_reasons": dict(self.rejected),
                    "alerts": self.alerts, "requests": dict(self.requests), "batches": self.batches,
                    "requests_refused_unread": dict(self.refused),
                    "requests_unauthorized": self.unauthorized}

    # ------------------------------------------------------------------ exposition
    def add_gauges(self, gauges: Callable[[], Iterable[Gauge]] | None = None,
                   labelled: Callable[[], Iterable[LabelledCounter]] | None = None) -> None:
        """Values read at every scrape: gauges, and counters kept elsewhere (by label)."""
        if gauges is not None:
            self._gauges.append(gauges)
        if labelled is not None:
            self._labelled.append(labelled)

    def render(self) -> bytes:
        """The Prometheus text exposition format (version 0.0.4)."""
        return generate_latest(self.registry)

    def _families(self) -> Iterable:
        with self._lock:
            yield _counter("deepids_records_received", "Records that arrived (scored + rejected).",
                           self.records_received)
            yield _counter("deepids_records_scored", "Records scored.", self.records_scored)
            yield _by_label("deepids_records_rejected", "Records refused, by reason.", "reason", self.rejected)
            yield _counter("deepids_alerts", "Records scored above the threshold.", self.alerts)
            yield _by_label("deepids_requests", "HTTP scoring requests answered, by status code.", "code",
                            self.requests)
            yield _by_label("deepids_requests_refused_unread",
                            "Scoring requests answered 503 before their body was read, by reason (their "
                            "records are in no record count: the sender still holds them).", "reason",
                            self.refused)
            yield _counter("deepids_requests_unauthorized",
                           "Requests refused with 401 (no bearer token, or the wrong one).", self.unauthorized)
            yield _counter("deepids_batches", "Micro-batches scored.", self.batches)
            yield _counter("deepids_batch_records", "Records in all micro-batches scored.", self.batch_records)
            h = HistogramMetricFamily("deepids_request_duration_seconds",
                                      "Time to answer a scoring request, from the first byte read to the answer.")
            cum, buckets = 0, []
            for edge, n in zip(LATENCY_BUCKETS, self._buckets):
                cum += n
                buckets.append((f"{edge:g}", cum))
            buckets.append(("+Inf", self._latency_count))
            h.add_metric([], buckets, self._latency_sum)
            yield h
        for source in self._gauges:
            for name, help_, value in source():
                yield GaugeMetricFamily(name, help_, value=float(value))
        for source in self._labelled:
            for name, help_, label, values in source():
                yield _by_label(name.removesuffix("_total"), help_, label, values)


class _Collector:
    def __init__(self, metrics: ServingMetrics):
        self.metrics = metrics

    def collect(self):
        return list(self.metrics._families())


def _counter(name: str, help_: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_, value=value)


def _by_label(name: str, help_: str, label: str, values: dict[str, float]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_, labels=[label])
    for key, n in sorted(values.items()):
        family.add_metric([str(key)], n)
    return family
