"""The group-commit writer's statements against a real PostgreSQL: which claims pay for
deduplication, and how an outcome finds its row.

lock_log_id takes a transaction's advisory lock on the log_id before it looks the log_id up in
every partition. A test session holding that lock makes the lookup observable: a claim that
pays for it waits for the session, a claim that skips it does not.

An outcome replaces its claim, is inserted whole when the claim is gone, and leaves a claim
taken over alone; one flush can hold every case at once.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta

import psycopg
import pytest
import pytest_asyncio

from router.store.errors import StoreError
from router.store.partitions import partition_name
from router.store.queries import LOG_TABLE, query
from router.store.writer import Claim, GroupCommitWriter, Outcome
from router.store.writer_pool import open_writer_pool

pytestmark = pytest.mark.asyncio


def _claim(log_id: str, *, deduplicable: bool) -> Claim:
    return Claim(
        log_id=log_id,
        sender_id="user_1",
        kind="general",
        mode="all",
        payload={"message": "hello"},
        metadata=None,
        event_time=None,
        routed_agents=["alpha"],
        trace_id="0af7651916cd43dd8448eb211c80319c",
        payload_hash="0" * 64,
        claim_token=secrets.token_hex(8),
        expires_in_s=30.0,
        deduplicable=deduplicable,
    )


@pytest_asyncio.fixture
async def writer(database_url: str) -> AsyncIterator[GroupCommitWriter]:
    outcomes = await open_writer_pool(
        database_url, max_size=2, statement_timeout_s=3.0, name="test-outcomes"
    )
    claims = await open_writer_pool(
        database_url,
        max_size=3,
        synchronous_commit=False,
        statement_timeout_s=3.0,
        name="test-claims",
    )
    writer = GroupCommitWriter(outcomes, claim_pool=claims)
    writer.start()
    yield writer
    await writer.stop()
    await claims.close()
    await outcomes.close()


async def test_a_unique_log_id_skips_the_lookup_a_repeatable_one_waits_for_it(
    database_url: str, writer: GroupCommitWriter
) -> None:
    """With the advisory lock of both log_ids held elsewhere, the claim of a receive-time
    log_id commits at once; the claim of a client's log_id waits for the lock, then wins."""
    with psycopg.connect(database_url, autocommit=True) as holder:
        for log_id in ("unique-1", "given-1"):
            holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 14))", [log_id])
        unique = writer.claim(_claim("unique-1", deduplicable=False), valid_for_s=10)
        assert await asyncio.wait_for(unique, 2.0) is None  # won, not held up
        given = writer.claim(_claim("given-1", deduplicable=True), valid_for_s=10)
        await asyncio.sleep(0.5)
        assert not given.done()  # lock_log_id is waiting for the holder
        holder.execute("SELECT pg_advisory_unlock_all()")
        assert await asyncio.wait_for(given, 2.0) is None
        rows = holder.execute("SELECT log_id, status FROM signal_log ORDER BY log_id").fetchall()
    assert rows == [("given-1", "in_flight"), ("unique-1", "in_flight")]


def _delivered(claim: Claim) -> Outcome:
    return Outcome(claim=claim, status="delivered", response=[], attempts=1, latency_ms=1.0)


async def test_a_unique_log_ids_outcome_stands_alone_and_never_overwrites(
    database_url: str, writer: GroupCommitWriter
) -> None:
    """Without the lookup, the outcome of a receive-time log_id still keeps both promises:
    its claim lost (a crash), the whole row is written; its claim taken over (the sweeper
    parked it as interrupted), nothing is."""
    lost, taken = (
        _claim("unique-lost", deduplicable=False),
        _claim("unique-taken", deduplicable=False),
    )
    for claim in (lost, taken):
        assert await writer.claim(claim, valid_for_s=10) is None
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute("DELETE FROM signal_log WHERE log_id = 'unique-lost'")
        db.execute("UPDATE signal_log SET status = 'interrupted' WHERE log_id = 'unique-taken'")
        assert (await writer.finish(_delivered(lost), retry_for_s=0)).written
        assert not (await writer.finish(_delivered(taken), retry_for_s=0)).written
        rows = db.execute("SELECT log_id, status FROM signal_log ORDER BY log_id").fetchall()
    assert rows == [("unique-lost", "delivered"), ("unique-taken", "interrupted")]


def _failed(claim: Claim) -> Outcome:
    return Outcome(
        claim=claim,
        status="partial",
        response=[],
        attempts=3,
        latency_ms=2.0,
        dl_agents=["beta"],
        dl_last_error="beta: HTTP 503",
        dl_attempts=2,
    )


async def test_one_flush_writes_each_outcome_by_what_became_of_its_claim(
    database_url: str, writer: GroupCommitWriter
) -> None:
    """Four outcomes in one flush: a delivered and a failed one replace their claims (the
    failed one with its DLQ entry, the signal's fields intact); a lost claim is inserted
    whole; a taken one is left alone; each log_id ends as exactly one row."""
    claims = {
        name: _claim(f"flush-{name}", deduplicable=name != "lost")
        for name in ("delivered", "failed", "lost", "taken")
    }
    claims["failed"].payload = {"message": "kept", "deep": {"list": [1, 2.5, None]}}
    claims["failed"].metadata = {"tenant": "t1"}
    claims["failed"].event_time = "2026-11-23T10:00:00Z"
    for claim in claims.values():
        assert await writer.claim(claim, valid_for_s=10) is None
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute("DELETE FROM signal_log WHERE log_id = 'flush-lost'")
        db.execute("UPDATE signal_log SET status = 'interrupted' WHERE log_id = 'flush-taken'")
        futures = [
            writer.finish(_delivered(claims["delivered"]), retry_for_s=0),
            writer.finish(_failed(claims["failed"]), retry_for_s=0),
            writer.finish(_delivered(claims["lost"]), retry_for_s=0),
            writer.finish(_delivered(claims["taken"]), retry_for_s=0),
        ]
        recorded = await asyncio.wait_for(asyncio.gather(*futures), 3.0)
        assert [(r.written, r.dead_lettered) for r in recorded] == [
            (True, False),
            (True, True),
            (True, False),
            (False, False),
        ]
        rows = db.execute(
            "SELECT log_id, status, attempts, claim_expires_at IS NULL, payload"
            " FROM signal_log ORDER BY log_id"
        ).fetchall()
        entry = db.execute(
            "SELECT agents, payload, metadata, event_time, trace_id, last_error, attempts, kind"
            " FROM dlq_open WHERE log_id = 'flush-failed'"
        ).fetchall()
    assert rows == [
        ("flush-delivered", "delivered", 1, True, {"message": "hello"}),
        ("flush-failed", "partial", 3, True, claims["failed"].payload),
        ("flush-lost", "delivered", 1, True, {"message": "hello"}),
        ("flush-taken", "interrupted", 0, False, {"message": "hello"}),
    ]
    assert entry == [
        (
            ["beta"],
            claims["failed"].payload,
            {"tenant": "t1"},
            "2026-11-23T10:00:00Z",
            "0af7651916cd43dd8448eb211c80319c",
            "beta: HTTP 503",
            2,
            "general",
        )
    ]


async def test_an_outcome_written_again_reports_success_and_changes_nothing(
    database_url: str, writer: GroupCommitWriter
) -> None:
    """A retry of an outcome whose commit's answer was lost: written again, still one row,
    still one DLQ entry; another request's outcome for the same claim (another token) is not
    written."""
    claim = _claim("again-1", deduplicable=True)
    assert await writer.claim(claim, valid_for_s=10) is None
    first = await writer.finish(_failed(claim), retry_for_s=0)
    again = await writer.finish(_failed(claim), retry_for_s=0)
    assert (first.written, first.dead_lettered) == (True, True)
    assert (again.written, again.dead_lettered) == (True, False)
    impostor = _claim("again-1", deduplicable=True)
    impostor.created_at = claim.created_at
    assert not (await writer.finish(_delivered(impostor), retry_for_s=0)).written
    with psycopg.connect(database_url, autocommit=True) as db:
        rows = db.execute("SELECT status FROM signal_log WHERE log_id = 'again-1'").fetchall()
        entries = db.execute("SELECT count(*) FROM dlq WHERE log_id = 'again-1'").fetchone()
    assert rows == [("partial",)]
    assert entries == (1,)


async def test_a_value_outside_the_logs_vocabulary_is_refused_and_fails_only_its_row(
    database_url: str, writer: GroupCommitWriter
) -> None:
    """signal_log's status, mode and latency are checked by the types the writers' statements
    read them as (migration 0006): a claim of an unknown mode, an outcome of an unknown status
    or of a negative latency fails, and the rows flushed beside it are written."""
    bad_mode = _claim("vocab-mode", deduplicable=False)
    bad_mode.mode = "sometimes"  # type: ignore[assignment]
    good = _claim("vocab-good", deduplicable=False)
    claimed = [writer.claim(c, valid_for_s=10) for c in (bad_mode, good)]
    results = await asyncio.wait_for(asyncio.gather(*claimed, return_exceptions=True), 3.0)
    assert isinstance(results[0], StoreError) and "signal_mode" in str(results[0])
    assert results[1] is None
    bad_status = _delivered(good)
    bad_status.status = "done"  # type: ignore[assignment]
    with pytest.raises(StoreError, match="signal_status"):
        await writer.finish(bad_status, retry_for_s=0)
    negative = _delivered(good)
    negative.latency_ms = -1.0
    with pytest.raises(StoreError, match="latency_ms"):
        await writer.finish(negative, retry_for_s=0)
    assert (await writer.finish(_delivered(good), retry_for_s=0)).written
    with psycopg.connect(database_url, autocommit=True) as db:
        rows = db.execute("SELECT log_id, status, mode FROM signal_log").fetchall()
        with pytest.raises(psycopg.errors.InvalidTextRepresentation, match="signal_status"):
            db.execute(
                query("dlq_settle_signals"),
                {
                    "log_id": ["vocab-good"],
                    "status": ["resolved"],
                    "response": ["[]"],
                    "attempts": [1],
                    "read_status": ["delivered"],
                    "read_updated_at": [None],
                },
            )
    assert rows == [("vocab-good", "delivered", "all")]


async def test_a_flush_spanning_midnight_writes_each_outcome_into_its_claims_partition(
    database_url: str, writer: GroupCommitWriter
) -> None:
    """Outcomes go straight into the partition their claim returned; a flush holding claims
    of two days writes each into its own, both durable, with their DLQ entry."""
    today = _claim("midnight-today", deduplicable=True)
    assert await writer.claim(today, valid_for_s=10) is None
    tomorrow = _claim("midnight-tomorrow", deduplicable=True)
    next_day = datetime.now(UTC).date() + timedelta(days=1)
    tomorrow.created_at = datetime.combine(next_day, time(0, 0, 1), UTC)
    tomorrow.partition = partition_name(LOG_TABLE, next_day)
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute(
            "INSERT INTO signal_log (log_id, sender_id, kind, status, mode, payload,"
            " routed_agents, trace_id, payload_hash, claim_token, created_at)"
            " VALUES (%s, 'user_1', 'general', 'in_flight', 'all', '{}', '[\"alpha\"]', 't',"
            " %s, %s, %s)",
            [tomorrow.log_id, tomorrow.payload_hash, tomorrow.claim_token, tomorrow.created_at],
        )
        assert today.partition.startswith("signal_log_p") and today.partition != tomorrow.partition
        recorded = await asyncio.wait_for(
            asyncio.gather(
                writer.finish(_delivered(today), retry_for_s=0),
                writer.finish(_failed(tomorrow), retry_for_s=0),
            ),
            3.0,
        )
        rows = db.execute(
            "SELECT log_id, status, tableoid::regclass::text FROM signal_log ORDER BY log_id"
        ).fetchall()
        entries = db.execute("SELECT log_id FROM dlq").fetchall()
    assert [(r.written, r.dead_lettered) for r in recorded] == [(True, False), (True, True)]
    assert rows == [
        ("midnight-today", "delivered", today.partition),
        ("midnight-tomorrow", "partial", tomorrow.partition),
    ]
    assert entries == [("midnight-tomorrow",)]


async def test_a_repeatable_log_ids_outcome_looks_every_partition_up_only_when_its_row_moved(
    database_url: str, writer: GroupCommitWriter
) -> None:
    """An outcome finds its claim's row at the ctid the claim returned and then skips
    lock_log_id's lookup of every partition (a session holding the log_id's lock does not hold
    it up). A claim lost in a crash is written whole once nobody holds the log_id; one lost
    while another request claimed the log_id in another partition writes nothing."""
    kept, lost, taken = (
        _claim(f"repeatable-{name}", deduplicable=True) for name in ("kept", "lost", "taken")
    )
    for claim in (kept, lost, taken):
        assert await writer.claim(claim, valid_for_s=10) is None
        assert claim.claim_tid is not None
    next_day = datetime.now(UTC).date() + timedelta(days=1)
    with psycopg.connect(database_url, autocommit=True) as db:
        db.execute("DELETE FROM signal_log WHERE log_id IN ('repeatable-lost', 'repeatable-taken')")
        db.execute(
            "INSERT INTO signal_log (log_id, sender_id, kind, status, mode, payload,"
            " routed_agents, trace_id, payload_hash, claim_token, created_at)"
            " VALUES ('repeatable-taken', 'user_1', 'general', 'delivered', 'all', '{}',"
            " '[\"alpha\"]', 't', %s, 'another', %s)",
            [taken.payload_hash, datetime.combine(next_day, time(0, 0, 1), UTC)],
        )
        with psycopg.connect(database_url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(hashtextextended('repeatable-kept', 14))")
            kept_done = await asyncio.wait_for(writer.finish(_delivered(kept), retry_for_s=0), 2)
        assert kept_done.written  # found at its ctid: the lock was never asked for
        assert (await writer.finish(_delivered(lost), retry_for_s=0)).written
        assert not (await writer.finish(_delivered(taken), retry_for_s=0)).written
        rows = db.execute(
            "SELECT log_id, status, claim_token = 'another' FROM signal_log ORDER BY log_id"
        ).fetchall()
    assert rows == [
        ("repeatable-kept", "delivered", False),
        ("repeatable-lost", "delivered", False),
        ("repeatable-taken", "delivered", True),
    ]
