"""signal_log's vocabulary checked by types the writers' statements read into, not CHECKs

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

PostgreSQL 15 parses and plans every CHECK constraint of a table again in each statement that
writes it (ExecRelCheck: stringToNode, then ExecPrepareExpr, for every execution). The route
path writes signal_log twice per signal, each time in a statement of its own, so its three
CHECKs were re-parsed six times per signal: with the writer's two statements alone, one
signal at a time, the backend spent 275-325 µs per signal with them and 250-265 with the
types below.

The same vocabulary is now enforced where the rows come in: the writers' statements read
status and mode as the enum types below and latency_ms as a non-negative domain, so a value
outside them fails the statement as the CHECK did, at a per-row input cost. Only the CHECKs
go; no column changes type, so nothing is rewritten. The DLQ keeps its CHECKs: it is written
only for failed signals.
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_STATUSES = "'in_flight', 'delivered', 'partial', 'dead_lettered', 'interrupted'"
_MODES = "'all', 'first_success'"


def upgrade() -> None:
    op.execute(f"CREATE TYPE signal_status AS ENUM ({_STATUSES})")
    op.execute(f"CREATE TYPE signal_mode AS ENUM ({_MODES})")
    op.execute("CREATE DOMAIN latency_ms AS double precision CHECK (VALUE >= 0)")
    # By kind, not name: 0004 created them beside the unpartitioned table's, hence `_check1`.
    op.execute(
        """
        DO $$
        DECLARE name text;
        BEGIN
            FOR name IN SELECT conname FROM pg_constraint
                        WHERE conrelid = 'signal_log'::regclass AND contype = 'c'
            LOOP
                EXECUTE format('ALTER TABLE signal_log DROP CONSTRAINT %I', name);
            END LOOP;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute(
        f"ALTER TABLE signal_log ADD CHECK (status IN ({_STATUSES})),"
        f" ADD CHECK (mode IN ({_MODES})), ADD CHECK (latency_ms IS NULL OR latency_ms >= 0)"
    )
    op.execute("DROP DOMAIN latency_ms")
    op.execute("DROP TYPE signal_mode")
    op.execute("DROP TYPE signal_status")
