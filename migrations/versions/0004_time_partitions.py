"""time partitions: signal_log by day, closed DLQ entries by day, log_ids locked across them

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Retention drops whole partitions (router/store/partitions.py), never deletes rows. An existing
table is moved over by copying it into daily partitions in this migration's transaction: the
time this takes is proportional to the table (about 40,000 rows/s here), and the tables are
locked meanwhile, so a large install runs it in a maintenance window.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LOG_COLUMNS = (
    "log_id, sender_id, kind, status, mode, payload, metadata, event_time, routed_agents,"
    " response, trace_id, attempts, latency_ms, payload_hash, claim_expires_at, created_at,"
    " updated_at, claim_token"
)
DLQ_COLUMNS = (
    "id, log_id, sender_id, kind, agents, mode, payload, metadata, event_time, trace_id,"
    " last_error, attempts, replay_count, status, created_at, last_attempt_at"
)
# Partitions exist this many days ahead from the start; the router's maintenance keeps it so.
DAYS_AHEAD = 7


def upgrade() -> None:
    op.execute("ALTER TABLE signal_log RENAME TO signal_log_unpartitioned")
    op.execute("ALTER TABLE dlq RENAME TO dlq_unpartitioned")
    for index in (
        "signal_log_pkey",
        "signal_log_created",
        "signal_log_sender_created",
        "signal_log_kind_created",
        "signal_log_status_created",
        "signal_log_in_flight",
        "dlq_pkey",
        "dlq_log_id_key",
        "dlq_pending_oldest",
        "dlq_status_id",
        "dlq_agents",
    ):
        op.execute(f"ALTER INDEX {index} RENAME TO {index}_unpartitioned")

    op.execute(
        """
        CREATE TABLE signal_log (
            log_id           text NOT NULL,
            sender_id        text NOT NULL,
            kind             text NOT NULL,
            status           text NOT NULL CHECK (status IN
                 ('in_flight', 'delivered', 'partial', 'dead_lettered', 'interrupted')),
            mode             text NOT NULL CHECK (mode IN ('all', 'first_success')),
            payload          jsonb NOT NULL,
            metadata         jsonb,
            event_time       text,
            routed_agents    jsonb NOT NULL,
            response         jsonb,
            trace_id         text NOT NULL,
            attempts         integer NOT NULL DEFAULT 0,
            latency_ms       double precision CHECK (latency_ms IS NULL OR latency_ms >= 0),
            payload_hash     text NOT NULL,
            claim_expires_at timestamptz,
            created_at       timestamptz NOT NULL DEFAULT now(),
            updated_at       timestamptz NOT NULL DEFAULT now(),
            claim_token      text,
            -- Unique per partition only (PostgreSQL requires the partition key in it): the
            -- final row's upsert targets its claim's slot. lock_log_id() below is what keeps
            -- a log_id unique across partitions.
            PRIMARY KEY (log_id, created_at)
        ) PARTITION BY RANGE (created_at)
        """
    )
    op.execute("CREATE INDEX signal_log_created ON signal_log (created_at DESC, log_id DESC)")
    op.execute(
        "CREATE INDEX signal_log_sender_created"
        " ON signal_log (sender_id, created_at DESC, log_id DESC)"
    )
    op.execute(
        "CREATE INDEX signal_log_kind_created ON signal_log (kind, created_at DESC, log_id DESC)"
    )
    # Narrowed to the statuses worth finding by status: nearly every row ends `delivered`, and
    # GET /logs?status=delivered finds those at once on signal_log_created. The final update of
    # a delivered signal therefore adds no entry here, and the sweeper finds claims still in
    # flight on this index too (the former signal_log_in_flight index is gone).
    op.execute(
        "CREATE INDEX signal_log_status_created"
        " ON signal_log (status, created_at DESC, log_id DESC) WHERE status <> 'delivered'"
    )
    op.execute(
        """
        CREATE FUNCTION lock_log_id(id text) RETURNS timestamptz
        LANGUAGE plpgsql VOLATILE AS $$
        -- Takes the log_id's lock until the transaction ends, then returns created_at of the
        -- row that holds the log_id in any partition (NULL: none). VOLATILE plpgsql, so the
        -- lookup runs on a snapshot taken after the lock was granted: a row that a concurrent
        -- claim committed while this one waited is seen. Every insert into signal_log passes
        -- through here, so a log_id is unique across all the partitions retention keeps.
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtextextended(id, 14));
            RETURN (SELECT s.created_at FROM signal_log AS s WHERE s.log_id = id LIMIT 1);
        END
        $$
        """
    )

    op.execute("CREATE SEQUENCE dlq_entry_id_seq AS bigint")
    op.execute(
        """
        CREATE TABLE dlq (
            id              bigint NOT NULL DEFAULT nextval('dlq_entry_id_seq'),
            log_id          text NOT NULL,
            sender_id       text NOT NULL,
            kind            text NOT NULL,
            agents          jsonb NOT NULL,
            mode            text NOT NULL CHECK (mode IN ('all', 'first_success')),
            payload         jsonb NOT NULL,
            metadata        jsonb,
            event_time      text,
            trace_id        text NOT NULL,
            last_error      text CHECK (last_error IS NULL OR char_length(last_error) <= 1000),
            attempts        integer NOT NULL DEFAULT 0,
            replay_count    integer NOT NULL DEFAULT 0,
            status          text NOT NULL DEFAULT 'pending' CHECK (status IN
                              ('pending', 'resolved', 'parked', 'discarded')),
            created_at      timestamptz NOT NULL DEFAULT now(),
            last_attempt_at timestamptz,
            -- When the entry was resolved or discarded: the key of its daily partition.
            closed_at       timestamptz,
            CHECK ((status IN ('resolved', 'discarded')) = (closed_at IS NOT NULL))
        ) PARTITION BY LIST (status)
        """
    )
    op.execute("ALTER SEQUENCE dlq_entry_id_seq OWNED BY dlq.id")
    # Open entries live in one table retention never touches; an entry moves to the day it
    # was closed on (an UPDATE of its status moves the row), and whole days are dropped.
    op.execute("CREATE TABLE dlq_open PARTITION OF dlq FOR VALUES IN ('pending', 'parked')")
    op.execute(
        "CREATE TABLE dlq_closed PARTITION OF dlq FOR VALUES IN ('resolved', 'discarded')"
        " PARTITION BY RANGE (closed_at)"
    )
    # One open entry per signal; new entries are inserted into dlq_open for this key.
    op.execute("ALTER TABLE dlq_open ADD CONSTRAINT dlq_open_log_id_key UNIQUE (log_id)")
    op.execute("CREATE INDEX dlq_id ON dlq (id DESC)")
    op.execute("CREATE INDEX dlq_log_id ON dlq (log_id)")
    op.execute("CREATE INDEX dlq_pending_oldest ON dlq (created_at, id) WHERE status = 'pending'")
    op.execute("CREATE INDEX dlq_status_id ON dlq (status, id DESC)")
    op.execute("CREATE INDEX dlq_agents ON dlq USING gin (agents jsonb_path_ops)")

    _create_days("signal_log", "SELECT min(created_at) FROM signal_log_unpartitioned")
    _create_days(
        "dlq_closed",
        "SELECT min(coalesce(last_attempt_at, created_at)) FROM dlq_unpartitioned"
        " WHERE status IN ('resolved', 'discarded')",
    )
    op.execute(
        f"INSERT INTO signal_log ({LOG_COLUMNS}) SELECT {LOG_COLUMNS} FROM signal_log_unpartitioned"
    )
    op.execute(
        f"INSERT INTO dlq ({DLQ_COLUMNS}, closed_at)"
        f" SELECT {DLQ_COLUMNS}, CASE WHEN status IN ('resolved', 'discarded')"
        "  THEN coalesce(last_attempt_at, created_at) END FROM dlq_unpartitioned"
    )
    op.execute(
        "SELECT setval('dlq_entry_id_seq',"
        " coalesce((SELECT max(id) FROM dlq_unpartitioned), 0) + 1, false)"
    )
    op.execute("DROP TABLE signal_log_unpartitioned")
    op.execute("DROP TABLE dlq_unpartitioned")


def _create_days(parent: str, oldest_sql: str) -> None:
    """Daily partitions of `parent` (UTC days) from the oldest row's day to DAYS_AHEAD ahead."""
    op.execute(
        f"""
        DO $$
        DECLARE
            day date;
        BEGIN
            FOR day IN
                SELECT generate_series(
                    least(coalesce(({oldest_sql}) AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'),
                          now() AT TIME ZONE 'UTC')::date,
                    (now() AT TIME ZONE 'UTC')::date + {DAYS_AHEAD}, interval '1 day')::date
            LOOP
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF {parent} FOR VALUES FROM (%L) TO (%L)',
                    '{parent}_p' || to_char(day, 'YYYYMMDD'),
                    day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
            END LOOP;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("ALTER TABLE signal_log RENAME TO signal_log_partitioned")
    op.execute("ALTER TABLE dlq RENAME TO dlq_partitioned")
    for index in (
        "signal_log_pkey",
        "signal_log_created",
        "signal_log_sender_created",
        "signal_log_kind_created",
        "signal_log_status_created",
        "dlq_pending_oldest",
        "dlq_status_id",
        "dlq_agents",
    ):
        op.execute(f"ALTER INDEX {index} RENAME TO {index}_partitioned")
    op.execute(
        """
        CREATE TABLE signal_log (
            log_id           text PRIMARY KEY,
            sender_id        text NOT NULL,
            kind             text NOT NULL,
            status           text NOT NULL CHECK (status IN
                 ('in_flight', 'delivered', 'partial', 'dead_lettered', 'interrupted')),
            mode             text NOT NULL CHECK (mode IN ('all', 'first_success')),
            payload          jsonb NOT NULL,
            metadata         jsonb,
            event_time       text,
            routed_agents    jsonb NOT NULL,
            response         jsonb,
            trace_id         text NOT NULL,
            attempts         integer NOT NULL DEFAULT 0,
            latency_ms       double precision CHECK (latency_ms IS NULL OR latency_ms >= 0),
            payload_hash     text NOT NULL,
            claim_expires_at timestamptz,
            created_at       timestamptz NOT NULL DEFAULT now(),
            updated_at       timestamptz NOT NULL DEFAULT now(),
            claim_token      text
        )
        """
    )
    op.execute(
        f"INSERT INTO signal_log ({LOG_COLUMNS}) SELECT {LOG_COLUMNS} FROM signal_log_partitioned"
    )
    op.execute("CREATE INDEX signal_log_created ON signal_log (created_at DESC, log_id DESC)")
    op.execute(
        "CREATE INDEX signal_log_sender_created"
        " ON signal_log (sender_id, created_at DESC, log_id DESC)"
    )
    op.execute(
        "CREATE INDEX signal_log_kind_created ON signal_log (kind, created_at DESC, log_id DESC)"
    )
    op.execute(
        "CREATE INDEX signal_log_status_created"
        " ON signal_log (status, created_at DESC, log_id DESC)"
    )
    op.execute(
        "CREATE INDEX signal_log_in_flight ON signal_log (claim_expires_at)"
        " WHERE status = 'in_flight'"
    )
    op.execute(
        """
        CREATE TABLE dlq (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            log_id          text NOT NULL UNIQUE,
            sender_id       text NOT NULL,
            kind            text NOT NULL,
            agents          jsonb NOT NULL,
            mode            text NOT NULL CHECK (mode IN ('all', 'first_success')),
            payload         jsonb NOT NULL,
            metadata        jsonb,
            event_time      text,
            trace_id        text NOT NULL,
            last_error      text CHECK (last_error IS NULL OR char_length(last_error) <= 1000),
            attempts        integer NOT NULL DEFAULT 0,
            replay_count    integer NOT NULL DEFAULT 0,
            status          text NOT NULL DEFAULT 'pending' CHECK (status IN
                              ('pending', 'resolved', 'parked', 'discarded')),
            created_at      timestamptz NOT NULL DEFAULT now(),
            last_attempt_at timestamptz
        )
        """
    )
    op.execute(
        f"INSERT INTO dlq ({DLQ_COLUMNS}) OVERRIDING SYSTEM VALUE"
        f" SELECT {DLQ_COLUMNS} FROM dlq_partitioned"
    )
    op.execute(
        "SELECT setval(pg_get_serial_sequence('dlq', 'id'),"
        " coalesce((SELECT max(id) FROM dlq), 0) + 1, false)"
    )
    op.execute("CREATE INDEX dlq_pending_oldest ON dlq (created_at, id) WHERE status = 'pending'")
    op.execute("CREATE INDEX dlq_status_id ON dlq (status, id DESC)")
    op.execute("CREATE INDEX dlq_agents ON dlq USING gin (agents jsonb_path_ops)")
    op.execute("DROP TABLE signal_log_partitioned")
    op.execute("DROP TABLE dlq_partitioned")
    op.execute("DROP FUNCTION lock_log_id(text)")
