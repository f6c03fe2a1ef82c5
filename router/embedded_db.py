"""The embedded PostgreSQL (pgserver) used when no DATABASE_URL is given."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import structlog

from router.settings import Settings

log = structlog.get_logger("router.embedded_db")


def embedded_database_url(data_dir: Path) -> str:
    """Start (or reuse) the pgserver instance under `data_dir/pgdata` and return its URL."""
    # pgserver reads XDG_RUNTIME_DIR for its lock file and warns when it is unset.
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

    pgdata = (data_dir / "pgdata").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process, so a second `make dev` or
    # test run reuses the same data and skips initdb.
    server = get_server(pgdata, cleanup_mode=None)
    url: str = server.get_uri()
    log.info("embedded_postgres", pgdata=str(pgdata), url=url)
    return url


def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL when set, else the embedded server's URL."""
    if settings.database_url:
        return settings.database_url
    return embedded_database_url(settings.data_dir)


def stop_embedded(data_dir: Path) -> None:
    """Stop the embedded server of `data_dir` (fast shutdown), waiting until it is down."""
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # made at import time

    # pgserver runs postgres as its own `pgserver` user when we are root.
    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=(data_dir / "pgdata").resolve(), user=user)
