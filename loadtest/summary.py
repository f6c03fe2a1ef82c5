"""The load run's verdict: signals/s, exact latency percentiles, errors by status, SLO PASS/FAIL."""

# Kept free of Locust so it can be tested and reused.
# What counts as an error (docs/PERFORMANCE.md):
#
# - 200 (delivered, partial, duplicate) and 202 (dead_lettered: recorded and queued for replay;
#   the agent failed, not the router) are the router doing its job;
# - 409 (a repeat of a log_id still being dispatched) is the contract's answer to a client
#   racing itself, which the duplicate share of the mix provokes on purpose;
# - anything else is an error: 4xx (the generated signals are all valid), 5xx (503 included:
#   shedding or a database outage is a miss for the SLO), and transport failures (status 0).
#
# Latency percentiles are over the non-error answers: an error's latency is not a routed
# signal's, and errors are judged by the error rate instead.

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NOT_ERRORS = frozenset({200, 202, 409})
# A generator whose p99 request went out later than this fell behind the rate it was given.
BEHIND_SCHEDULE_MS = 5.0


@dataclass(frozen=True)
class Slo:
    """The router's SLO: p50 at most `p50_ms` (and p99 at most `p99_ms` when given), errors
    below `max_error_rate`."""

    p50_ms: float = 5.0
    max_error_rate: float = 0.001
    p99_ms: float | None = None


def is_error(status: int) -> bool:
    """True for answers the SLO counts against the router (see the module docstring)."""
    return status not in NOT_ERRORS


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank q-quantile (0..1) of sorted values; NaN when there are none."""
    if not sorted_values:
        return math.nan
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[rank]


@dataclass
class Recorder:
    """Collects every answer of the run: latency in ms and HTTP status (0 for no answer)."""

    latencies_ms: list[float] = field(default_factory=list)
    # Signals every agent took at its first attempt: the faults scenario's "kept its latency".
    first_attempt_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    # An open-loop generator's: how far behind its schedule each request went out (negative:
    # early, on the event loop's 1-ms timer grid). Apart from latency: the generator's, not
    # the server's.
    late_ms: list[float] = field(default_factory=list)
    first_sent: float | None = None
    last_done: float | None = None

    def record(
        self, status: int, latency_ms: float, now: float, *, first_attempt: bool = False
    ) -> None:
        """One finished request; `now` is a monotonic clock reading at its end."""
        self.statuses[status] += 1
        if not is_error(status):
            self.latencies_ms.append(latency_ms)
            if first_attempt:
                self.first_attempt_ms.append(latency_ms)
        start = now - latency_ms / 1000
        self.first_sent = start if self.first_sent is None else min(self.first_sent, start)
        self.last_done = now if self.last_done is None else max(self.last_done, now)

    @property
    def count(self) -> int:
        """Requests answered (or failed) so far."""
        return sum(self.statuses.values())


@dataclass(frozen=True)
class Summary:
    """The figures of one run."""

    requests: int
    elapsed_s: float
    signals_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    first_attempt_count: int
    first_attempt_p50_ms: float
    statuses: Mapping[int, int]
    # NaN when the generator keeps no schedule (a closed loop).
    late_p50_ms: float
    late_p99_ms: float
    errors: int
    error_rate: float
    passed: bool
    slo: Slo

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "requests": self.requests,
            "elapsed_s": round(self.elapsed_s, 3),
            "signals_per_s": round(self.signals_per_s, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p95_ms": round(self.p95_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "first_attempt_count": self.first_attempt_count,
            "first_attempt_p50_ms": round(self.first_attempt_p50_ms, 3),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "late_p50_ms": _rounded(self.late_p50_ms),
            "late_p99_ms": _rounded(self.late_p99_ms),
            "errors": self.errors,
            "error_rate": self.error_rate,
            "slo": {
                "p50_ms": self.slo.p50_ms,
                "p99_ms": self.slo.p99_ms,
                "max_error_rate": self.slo.max_error_rate,
            },
            "passed": self.passed,
        }


def summarize(recorder: Recorder, slo: Slo | None = None) -> Summary:
    """Reduce a run to its figures and the SLO verdict."""
    slo = slo or Slo()
    latencies = sorted(recorder.latencies_ms)
    requests = recorder.count
    errors = sum(n for status, n in recorder.statuses.items() if is_error(status))
    elapsed = 0.0
    if recorder.first_sent is not None and recorder.last_done is not None:
        elapsed = recorder.last_done - recorder.first_sent
    error_rate = errors / requests if requests else 1.0
    p50 = percentile(latencies, 0.50)
    p99 = percentile(latencies, 0.99)
    late = sorted(recorder.late_ms)
    return Summary(
        requests=requests,
        elapsed_s=elapsed,
        signals_per_s=requests / elapsed if elapsed > 0 else 0.0,
        p50_ms=p50,
        p95_ms=percentile(latencies, 0.95),
        p99_ms=p99,
        max_ms=latencies[-1] if latencies else math.nan,
        first_attempt_count=len(recorder.first_attempt_ms),
        first_attempt_p50_ms=percentile(sorted(recorder.first_attempt_ms), 0.50),
        statuses=dict(recorder.statuses),
        late_p50_ms=percentile(late, 0.50),
        late_p99_ms=percentile(late, 0.99),
        errors=errors,
        error_rate=error_rate,
        # NaN (nothing answered) compares False: no answers is a FAIL.
        passed=p50 <= slo.p50_ms
        and (slo.p99_ms is None or p99 <= slo.p99_ms)
        and error_rate < slo.max_error_rate,
        slo=slo,
    )


def _rounded(value: float) -> float | None:
    """JSON has no NaN: a figure that does not apply is null."""
    return None if math.isnan(value) else round(value, 3)


def _status_line(statuses: Iterable[tuple[int, int]]) -> str:
    parts = []
    for status, n in sorted(statuses):
        label = "no answer" if status == 0 else str(status)
        parts.append(f"{label}: {n}{'' if is_error(status) else ' (ok)'}")
    return ", ".join(parts) or "none"


def render(summary: Summary, title: str = "load summary") -> str:
    """The human summary, ending in the PASS/FAIL line."""
    s = summary
    error_statuses = [(k, v) for k, v in s.statuses.items() if is_error(k)]
    verdict = "PASS" if s.passed else "FAIL"
    reasons = []
    if not s.p50_ms <= s.slo.p50_ms:
        reasons.append(f"p50 {s.p50_ms:.2f} ms > {s.slo.p50_ms} ms")
    if s.slo.p99_ms is not None and not s.p99_ms <= s.slo.p99_ms:
        reasons.append(f"p99 {s.p99_ms:.2f} ms > {s.slo.p99_ms} ms")
    if not s.error_rate < s.slo.max_error_rate:
        reasons.append(f"error rate {s.error_rate:.3%} >= {s.slo.max_error_rate:.1%}")
    lines = [
        f"== {title} ==",
        f"signals        {s.requests} in {s.elapsed_s:.2f} s = {s.signals_per_s:.1f} signals/s",
        f"latency (ms)   p50 {s.p50_ms:.2f}  p95 {s.p95_ms:.2f}  p99 {s.p99_ms:.2f}"
        f"  max {s.max_ms:.2f}",
    ]
    if s.first_attempt_count:
        lines.append(
            f"first attempt  p50 {s.first_attempt_p50_ms:.2f} ms over the {s.first_attempt_count}"
            " signals no agent had to retry"
        )
    if not math.isnan(s.late_p99_ms):
        lines.append(
            f"sent           p50 {s.late_p50_ms:.2f}  p99 {s.late_p99_ms:.2f} ms behind schedule"
            " (not counted in latency)"
        )
        if s.late_p99_ms > BEHIND_SCHEDULE_MS:
            lines.append(
                "               the generator fell behind: this machine could not send at this"
                " rate, so the server saw less than was asked"
            )
    return "\n".join(
        [
            *lines,
            f"answers        {_status_line(s.statuses.items())}",
            f"errors         {s.errors} ({s.error_rate:.3%}): {_status_line(error_statuses)}",
            f"SLO {verdict}: p50 <= {s.slo.p50_ms} ms"
            + (f", p99 <= {s.slo.p99_ms} ms" if s.slo.p99_ms is not None else "")
            + f" and error rate < {s.slo.max_error_rate:.1%}"
            + (f" ({'; '.join(reasons)})" if reasons else ""),
        ]
    )
