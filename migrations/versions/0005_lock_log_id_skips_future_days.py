"""lock_log_id looks a log_id up only in partitions that can hold it: not the days ahead

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

Maintenance keeps 7 daily partitions ahead of today, all empty; the lookup probed each of
them for every claim of a log_id that may repeat. Every row's created_at is the database's
now() when its claim was inserted (a lost claim's outcome reuses that value), so a bound of
now() + 1 day leaves nothing out; now() is stable, so the cached plan prunes those partitions
when it starts ("Subplans Removed"). Measured one claim at a time with today's partition and
7 ahead: the backend's CPU per claim fell to that of a claim with no lookup at all.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_FUNCTION = """
CREATE OR REPLACE FUNCTION lock_log_id(id text) RETURNS timestamptz
LANGUAGE plpgsql VOLATILE AS $$
-- Takes the log_id's lock until the transaction ends, then returns created_at of the
-- row that holds the log_id in any partition (NULL: none). VOLATILE plpgsql, so the
-- lookup runs on a snapshot taken after the lock was granted: a row that a concurrent
-- claim committed while this one waited is seen. Every insert into signal_log passes
-- through here, so a log_id is unique across all the partitions retention keeps.
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(id, 14));
    RETURN (SELECT s.created_at FROM signal_log AS s
            WHERE s.log_id = id{bound} LIMIT 1);
END
$$
"""
# created_at is the database's now() at the claim: no row is a day ahead of it, and the
# partitions made ahead of today are pruned when the plan starts.
_BOUND = "\n              AND s.created_at < now() + interval '1 day'"


def upgrade() -> None:
    op.execute(_FUNCTION.format(bound=_BOUND))


def downgrade() -> None:
    op.execute(_FUNCTION.format(bound=""))
