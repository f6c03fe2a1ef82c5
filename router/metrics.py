"""Every Prometheus collector of the router, defined in one place, label children resolved once."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

from router.agent_health import BreakerState
from router.model import ATTEMPT_KINDS, AttemptKind

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Fine below 10 ms so a 5 ms p50 SLO can be read off the buckets.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
OUTCOMES = ("delivered", "partial", "dead_lettered", "duplicate", "rejected")
# Every status POST /route answers with, so each series exists (at zero) from the start.
ROUTE_CODES = (200, 202, 400, 401, 409, 413, 422, 429, 503)
# Files of gauges whose value belongs to one live process: `gauge_livesum_1234.db`.
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def multiprocess_enabled() -> bool:
    """True when the process writes its metrics to the shared multiprocess directory."""
    return bool(os.environ.get(MULTIPROC_ENV))


def prepare_multiprocess_dir(path: Path) -> None:
    """Remove a previous run's metric files before workers start: they would be summed in."""
    # Only our *.db files go: the directory is the operator's (it may be /tmp or a volume).
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (multiprocess mode only)."""
    if multiprocess_enabled():
        prom_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def reap_dead_workers(path: Path) -> list[int]:
    """Drop the live gauges of workers that no longer run; return their pids.

    uvicorn restarts a crashed worker without telling us, and its in-flight and pool
    gauges would otherwise be summed in for the rest of the run.
    """
    dead: set[int] = set()
    for file in path.glob("gauge_live*_*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(file.name)
        if match is not None and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        prom_multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
    return sorted(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class Metrics:
    """The collectors, registered on one registry; `render()` gives the scrape body."""

    def __init__(self, kinds: Iterable[str], agents: Mapping[str, Sequence[str]]) -> None:
        """`agents` maps each agent to its replicas' labels."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.kinds = tuple(kinds)
        self.agents = tuple(agents)

        self.signals_received = Counter(
            "signals_received", "Signals accepted for routing, by kind.", ["kind"], registry=r
        )
        self.router_latency = Histogram(
            "router_latency_seconds",
            "Time from request to response for routed signals, by kind.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.routing_errors = Counter(
            "routing_errors",
            "Agent deliveries that failed after their retries.",
            ["agent"],
            registry=r,
        )
        self.retry_attempts = Counter(
            "retry_attempts", "Agent attempts after the first.", ["agent"], registry=r
        )
        self.dlq_total = Counter("dlq", "Signals written to the dead-letter queue.", registry=r)
        # Set (never incremented: mostrecent refuses inc) from the database by every worker's
        # maintenance task; the newest reading wins across workers.
        self.dlq_backlog = Gauge(
            "dlq_backlog",
            "Pending dead-letter entries.",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.signal_outcomes = Counter(
            "signal_outcomes",
            "Answered signals by outcome.",
            ["outcome"],
            registry=r,
        )
        # The availability SLI (non-5xx answers) needs the status, which outcomes do not carry:
        # `rejected` mixes a client's 401 with the router's own 503.
        self.route_responses = Counter(
            "route_responses",
            "POST /route answers by HTTP status code.",
            ["code"],
            registry=r,
        )
        self.agent_latency = Histogram(
            "agent_attempt_seconds",
            "One attempt to an agent, by agent, replica and outcome.",
            ["agent", "replica", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.agent_inflight = Gauge(
            "agent_inflight_requests",
            "Requests in flight to each agent.",
            ["agent"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.commit_batch_size = Histogram(
            "log_commit_batch_rows",
            "Rows written by one group commit, by lane (claim or outcome).",
            ["lane"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.commit_latency = Histogram(
            "log_commit_duration_seconds",
            "Duration of one group-commit transaction, by lane: claims commit without waiting"
            " for the WAL flush, outcomes wait for it.",
            ["lane"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.pool_size = Gauge(
            "db_pool_connections",
            "Connections held by the database pool.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_in_use = Gauge(
            "db_pool_connections_in_use",
            "Pool connections lent out.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_waiting = Gauge(
            "db_pool_requests_waiting",
            "Requests waiting for a pool connection.",
            registry=r,
            multiprocess_mode="livesum",
        )

        # Breakers live in each process; with several workers, open in any one of them shows.
        self.breaker_open = Gauge(
            "agent_breaker_open",
            "1 while the agent's breaker is open or half-open in a router process.",
            ["agent"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.auto_replayed = Counter(
            "auto_replayed",
            "DLQ entries replayed on their own when the agent's breaker closed.",
            ["agent"],
            registry=r,
        )
        self.rate_limited = Counter(
            "rate_limited", "Signals refused with 429: their sender was over its rate.", registry=r
        )

        # Children resolved once: the hot path does a dict lookup, never .labels().
        self.received_by_kind = {k: self.signals_received.labels(k) for k in self.kinds}
        self.latency_by_kind = {k: self.router_latency.labels(k) for k in self.kinds}
        self.errors_by_agent = {a: self.routing_errors.labels(a) for a in self.agents}
        self.retries_by_agent = {a: self.retry_attempts.labels(a) for a in self.agents}
        self.inflight_by_agent = {a: self.agent_inflight.labels(a) for a in self.agents}
        self.outcome = {o: self.signal_outcomes.labels(o) for o in OUTCOMES}
        self.responses_by_code = {c: self.route_responses.labels(str(c)) for c in ROUTE_CODES}
        for agent in self.agents:
            self.breaker_open.labels(agent).set(0)
            self.auto_replayed.labels(agent)
        self.attempt_latency = {
            (a, replica, o): self.agent_latency.labels(a, replica, o)
            for a, replicas in agents.items()
            for replica in replicas
            for o in ATTEMPT_KINDS
        }

    def responded(self, status_code: int) -> None:
        """Count one POST /route answer by its HTTP status."""
        child = self.responses_by_code.get(status_code)
        if child is None:
            child = self.route_responses.labels(str(status_code))
        child.inc()

    def observe_latency(self, kind: str, seconds: float) -> None:
        """Record one answered signal's latency; a kind no longer in the table still counts."""
        child = self.latency_by_kind.get(kind)
        if child is None:
            child = self.router_latency.labels(kind)
        child.observe(seconds)

    def observe_pool(self, stats: Mapping[str, int]) -> None:
        """Copy a psycopg pool's `get_stats()` into the pool gauges."""
        size = stats.get("pool_size", 0)
        self.pool_size.set(size)
        self.pool_in_use.set(size - stats.get("pool_available", 0))
        self.pool_waiting.set(stats.get("requests_waiting", 0))

    # DispatchObserver: the dispatcher reports each attempt through these.
    def attempt_finished(
        self, agent: str, replica: str, outcome: AttemptKind, seconds: float
    ) -> None:
        """Record one attempt's duration."""
        child = self.attempt_latency.get((agent, replica, outcome))
        if child is not None:
            child.observe(seconds)

    def retry(self, agent: str) -> None:
        """Count an attempt after the first."""
        child = self.retries_by_agent.get(agent)
        if child is not None:
            child.inc()

    def agent_failed(self, agent: str) -> None:
        """Count a delivery that failed after its retries."""
        child = self.errors_by_agent.get(agent)
        if child is not None:
            child.inc()

    def inflight(self, agent: str, delta: int) -> None:
        """Track requests in flight to an agent."""
        child = self.inflight_by_agent.get(agent)
        if child is not None:
            child.inc(delta)

    def breaker_changed(self, agent: str, state: BreakerState) -> None:
        """An AgentHealth listener: the breaker gauge follows each state change."""
        self.breaker_open.labels(agent).set(state != "closed")

    def render(self) -> tuple[bytes, str]:
        """The scrape body and its content type; summed over workers in multiprocess mode."""
        if multiprocess_enabled():
            reap_dead_workers(Path(os.environ[MULTIPROC_ENV]))
            registry = CollectorRegistry()
            prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
