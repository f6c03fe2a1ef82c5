"""What the store reports to, as a Protocol: it needs four instruments, not router.metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class _Histogram(Protocol):
    def observe(self, amount: float) -> None: ...


class _Histograms(Protocol):
    def labels(self, *values: str) -> _Histogram: ...


class _Gauge(Protocol):
    def set(self, value: float) -> None: ...


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class StoreObserver(Protocol):
    """The instruments the writer and the maintenance task feed (router.metrics.Metrics)."""

    @property
    def commit_batch_size(self) -> _Histograms: ...
    @property
    def commit_latency(self) -> _Histograms: ...
    @property
    def dlq_backlog(self) -> _Gauge: ...
    @property
    def dlq_total(self) -> _Counter: ...
    def observe_pool(self, stats: Mapping[str, int]) -> None: ...
