"""Process settings: read from the environment once, at start, into one frozen object."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from router.rate_limit import RateLimit

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "console")


class SettingsError(Exception):
    """A setting in the environment is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the process reads from its environment."""

    database_url: str | None = None
    # A streaming replica for GET /logs and GET /stats; None: they read DATABASE_URL.
    database_read_url: str | None = None
    api_keys: frozenset[str] = frozenset()
    admin_api_keys: frozenset[str] = frozenset()
    routes_file: Path | None = None
    max_body_bytes: int = 1_048_576
    db_pool_min: int = 2
    db_pool_max: int = 16
    log_level: str = "info"
    log_format: str = "json"
    dlq_max_replays: int = 5
    data_dir: Path = field(default_factory=lambda: Path(".router"))
    # Claims older than their deadline are swept into the DLQ this often.
    sweep_interval_s: float = 5.0
    # How long a request waits for its final row before answering 503 outcome_not_recorded.
    outcome_timeout_s: float = 10.0
    # How long SIGTERM lets requests finish; None: the longest a request can take.
    shutdown_grace_s: float | None = None
    # SENDER_RATE_LIMIT / SENDER_RATE_BURST; None: senders are not limited.
    sender_rate_limit: RateLimit | None = None
    # Log rows and closed DLQ entries older than this go with their daily partition; a log_id
    # is deduplicated at least this long.
    log_retention: timedelta = timedelta(days=14)
    # latency_stats rows older than this are deleted; each process adds its counts this often.
    stats_retention: timedelta = timedelta(days=30)
    stats_flush_s: float = 60.0

    @property
    def route_keys(self) -> frozenset[str]:
        """Keys allowed to POST /route: admin keys may route too."""
        return self.api_keys | self.admin_api_keys

    @property
    def admin_keys(self) -> frozenset[str]:
        """Keys allowed to read /logs and use /dlq (the API keys when no admin key is set)."""
        return self.admin_api_keys or self.api_keys

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build from `env` (default os.environ); raise SettingsError naming the variable."""
        env = os.environ if env is None else env
        return cls(
            database_url=_database_url(env, "DATABASE_URL"),
            database_read_url=_database_url(env, "DATABASE_READ_URL"),
            api_keys=_keys(env, "API_KEY"),
            admin_api_keys=_keys(env, "ADMIN_API_KEY"),
            routes_file=_path(env.get("ROUTES_FILE")),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 1_048_576, minimum=1),
            db_pool_min=_int(env, "DB_POOL_MIN", 2, minimum=1),
            db_pool_max=_int(env, "DB_POOL_MAX", 16, minimum=1),
            log_level=_choice(env, "LOG_LEVEL", "info", LOG_LEVELS),
            log_format=_choice(env, "LOG_FORMAT", "json", LOG_FORMATS),
            dlq_max_replays=_int(env, "DLQ_MAX_REPLAYS", 5, minimum=1),
            data_dir=Path(env.get("ROUTER_DATA_DIR") or ".router"),
            outcome_timeout_s=_int(env, "OUTCOME_TIMEOUT_MS", 10_000, minimum=100) / 1000,
            shutdown_grace_s=_optional_float(env, "SHUTDOWN_GRACE_S", minimum=0.0),
            sender_rate_limit=_rate_limit(env),
            log_retention=_duration(env, "LOG_RETENTION", timedelta(days=14)),
            stats_retention=_duration(env, "STATS_RETENTION", timedelta(days=30)),
            stats_flush_s=_optional_float(env, "STATS_FLUSH_S", minimum=0.05) or 60.0,
        ).validated()

    def validated(self) -> Settings:
        """Check cross-field rules; return self."""
        if self.db_pool_max < self.db_pool_min:
            raise SettingsError(
                f"DB_POOL_MAX ({self.db_pool_max}) must be >= DB_POOL_MIN ({self.db_pool_min})"
            )
        return self

    def require_api_key(self) -> None:
        """The server refuses to start without at least one key."""
        if not self.api_keys:
            raise SettingsError(
                "API_KEY is not set: give one or more comma-separated keys (make dev uses dev-key)"
            )


def _rate_limit(env: Mapping[str, str]) -> RateLimit | None:
    rate = env.get("SENDER_RATE_LIMIT", "").strip()
    if not rate:
        return None
    try:
        return RateLimit.parse(rate, env.get("SENDER_RATE_BURST"))
    except ValueError as exc:
        raise SettingsError(f"SENDER_RATE_LIMIT / SENDER_RATE_BURST: {exc}") from None


def normalize_database_url(url: str) -> str:
    """Accept SQLAlchemy-style `postgresql+psycopg://` URLs; psycopg wants plain `postgresql://`."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def _database_url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    url = normalize_database_url(raw.strip())
    if not url.startswith("postgresql://"):
        raise SettingsError(
            f"{name} must start with postgresql:// (or postgresql+psycopg://), "
            f"got {raw.split('://')[0]!r}://…"
        )
    return url


def _keys(env: Mapping[str, str], name: str) -> frozenset[str]:
    raw = env.get(name)
    if raw is None:
        return frozenset()
    keys = frozenset(k.strip() for k in raw.split(",") if k.strip())
    if not keys:
        raise SettingsError(f"{name} is set but holds no key (expected comma-separated keys)")
    return keys


_DURATION = re.compile(r"(\d+)\s*(s|m|h|d)")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _duration(env: Mapping[str, str], name: str, default: timedelta) -> timedelta:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    match = _DURATION.fullmatch(raw.strip().lower())
    if match is None or int(match[1]) == 0:
        raise SettingsError(
            f"{name} must be a positive duration like 30d, 12h, 90m or 600s, got {raw!r}"
        )
    return timedelta(**{_DURATION_UNITS[match[2]]: int(match[1])})


def _path(raw: str | None) -> Path | None:
    return Path(raw) if raw and raw.strip() else None


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _optional_float(env: Mapping[str, str], name: str, *, minimum: float) -> float | None:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value >= minimum or value == float("inf"):
        raise SettingsError(f"{name} must be a finite number >= {minimum}, got {raw!r}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value
