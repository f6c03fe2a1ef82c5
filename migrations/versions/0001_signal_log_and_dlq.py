"""signal log and dead-letter queue

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
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
            updated_at       timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # Keyset pagination of GET /logs: newest first, with and without each filter.
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
    # The sweeper looks only at claims still in flight; the partial index stays tiny.
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
    # Replayers claim pending entries oldest first with FOR UPDATE SKIP LOCKED.
    op.execute("CREATE INDEX dlq_pending_oldest ON dlq (created_at, id) WHERE status = 'pending'")
    op.execute("CREATE INDEX dlq_status_id ON dlq (status, id DESC)")
    op.execute("CREATE INDEX dlq_agents ON dlq USING gin (agents jsonb_path_ops)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS dlq")
    op.execute("DROP TABLE IF EXISTS signal_log")
