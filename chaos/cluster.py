"""A private PostgreSQL cluster of the suite's own, which it may crash: never the machine's."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from tests.support import free_port


def _bin_dir() -> Path:
    """The newest system PostgreSQL's binaries, else the ones the pgserver package bundles."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
    if found:
        return Path(found[-1]).parent
    import pgserver

    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin"
    if (bundled / "pg_ctl").exists():
        return bundled
    raise RuntimeError("no PostgreSQL binaries: install postgresql or the pgserver package")


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


class Cluster:
    """initdb in a temp folder, run as the `postgres` OS user when we are root (PostgreSQL
    refuses to run as root), on a free loopback port."""

    def __init__(self, *, init: bool = True) -> None:
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="router-chaos-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        if init:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    @classmethod
    def standby_of(cls, primary: Cluster) -> Cluster:
        """A streaming replica of the running `primary` (pg_basebackup -R); start() it."""
        # initdb's pg_hba.conf trusts replication connections from 127.0.0.1, and wal_level
        # replica with max_wal_senders 10 are the defaults: the primary needs no change. A
        # fast checkpoint: the default spread one makes pg_basebackup wait ~100 s here.
        standby = cls(init=False)
        standby._run(
            "pg_basebackup",
            *("-D", str(standby.data), "-h", "127.0.0.1", "-p", str(primary.port)),
            *("-U", "postgres", "-X", "stream", "-R", "--no-sync", "--checkpoint", "fast"),
        )
        return standby

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> None:
        """Start (or restart after a crash: crash recovery replays the WAL)."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=on"
            " -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def crash(self) -> None:
        """`pg_ctl stop -m immediate`: no checkpoint, unflushed commits are lost."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")

    def stop(self) -> None:
        """Stop and remove the cluster."""
        with contextlib.suppress(RuntimeError):  # already down
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
