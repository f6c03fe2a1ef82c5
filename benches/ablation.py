"""What each layer of the route path costs: the router with layers answered at once, alternated.

#     python -m benches.ablation [--seconds 5] [--rounds 2]

One stack (benches.stack); the router as shipped, then with the log line, the metrics, the
database or the agent call replaced by an immediate answer (benches/ablated_router.py), then
with all four, each driven at 32 connections and at one, round after round. One more variant
keeps every layer and changes the log's table instead: `signal_log` without the indexes its
read paths use (`without_read_indexes`), so an outcome updates its claim's row in place (a
HOT update, no new index entry): the most PostgreSQL's share could give back if those reads
found another path. The layers overlap (removing one changes how signals batch and how often
the loop sleeps), so read each row against the first, not as parts of a sum. Every answer
must be 200: a variant that answers anything else is reported and fails the run, since an
error is cheaper than work.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from benches.ablated_router import ABLATE_ENV, LAYERS
from benches.compare_reference import phase_figures
from benches.stack import e2e_stack

VARIANTS: dict[str, tuple[str, ...]] = {
    "the router as shipped": (),
    "no log line": ("log",),
    "no prometheus_client updates": ("metrics",),
    "no database": ("database",),
    "no agent call": ("agent",),
    "none of the four": LAYERS,
}
# The router as shipped on a log without these (the variant's name says which schema).
LOG_WITHOUT_READ_INDEXES = "no read indexes: HOT outcomes"
READ_INDEXES = ("signal_log_sender_created", "signal_log_kind_created", "signal_log_status_created")
# Room left on each page for the outcome's new version of the claim's row: at 80 about half
# of the outcomes were HOT here, at 50 about four in five.
HOT_FILLFACTOR = 50
FIGURES = (("rps", 32), ("cpu_us", 32), ("db_cpu_us", 32), ("cpu_us", 1), ("p50_ms", 1))


@contextlib.contextmanager
def without_read_indexes(database_url: str) -> Iterator[None]:
    """signal_log without READ_INDEXES, its partitions filled to HOT_FILLFACTOR, then put back
    as they were: with `status` in no index, an outcome can update its claim's row in place."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        # The database's own text of each index, to build it again afterwards. A partitioned
        # table's index prints as `ON ONLY` the parent: run as printed, it would build no
        # index on the partitions.
        definitions = [
            row[0]
            .replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1)
            .replace(" ON ONLY ", " ON ", 1)
            for row in conn.execute(
                "SELECT indexdef FROM pg_indexes"
                " WHERE tablename = 'signal_log' AND indexname = ANY(%s) ORDER BY indexname",
                [list(READ_INDEXES)],
            )
        ]
        if len(definitions) != len(READ_INDEXES):
            raise RuntimeError(f"signal_log lacks one of {READ_INDEXES}: not a migrated log")
        partitions = [
            sql.Identifier(*row[0].split("."))
            for row in conn.execute(
                "SELECT inhrelid::regclass::text FROM pg_inherits"
                " WHERE inhparent = 'signal_log'::regclass"
            )
        ]
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for name in READ_INDEXES:
                conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
            for partition in partitions:
                conn.execute(
                    sql.SQL("ALTER TABLE {} SET (fillfactor = {})").format(
                        partition, sql.Literal(HOT_FILLFACTOR)
                    )
                )
        yield
    finally:
        # Whatever was dropped before a failure is built again; what was not is left alone.
        with psycopg.connect(database_url, autocommit=True) as conn:
            for partition in partitions:
                conn.execute(sql.SQL("ALTER TABLE {} RESET (fillfactor)").format(partition))
            for definition in definitions:
                conn.execute(sql.SQL(definition))


def main(argv: Sequence[str] | None = None) -> int:
    """Alternate the variants for --rounds rounds; print the medians' table."""
    parser = argparse.ArgumentParser(prog="python -m benches.ablation", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    failed: list[str] = []
    names = [*VARIANTS, LOG_WITHOUT_READ_INDEXES]
    with e2e_stack() as stack:
        for _ in range(args.rounds):
            for name in names:
                schema = (
                    without_read_indexes(stack.database_url)
                    if name == LOG_WITHOUT_READ_INDEXES
                    else contextlib.nullcontext()
                )
                os.environ[ABLATE_ENV] = ",".join(VARIANTS.get(name, ()))
                with schema:
                    router = stack.router(module="benches.ablated_router")
                    try:
                        for connections in (32, 1):
                            phase = phase_figures(router, connections, args.seconds)
                            runs.setdefault((name, connections), []).append(phase)
                            if set(phase["statuses"]) != {"200"}:
                                failed.append(f"{name} @{connections}: {phase['statuses']}")
                    finally:
                        router.stop()
                        del os.environ[ABLATE_ENV]
    header = "".join(f"{figure + f' @{c}':>14}" for figure, c in FIGURES)
    print(f"{'variant':32}{header}")
    for name in names:
        cells = "".join(
            f"{statistics.median(r[figure] for r in runs[(name, c)]):>14,.1f}"
            for figure, c in FIGURES
        )
        print(f"{name:32}{cells}")
    for line in failed:
        print(f"not all answers were 200: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
