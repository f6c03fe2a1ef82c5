"""latency_stats: per-minute delivery latency by kind and agent, as mergeable histogram buckets

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per minute, kind and agent, whatever the number of router processes: each adds
    # its counts and buckets into the row (router/stats.py), so percentiles computed from the
    # merged buckets are those of all the traffic, never an average of per-process ones.
    op.execute(
        """
        CREATE TABLE latency_stats (
            minute timestamptz NOT NULL,
            kind text NOT NULL,
            agent text NOT NULL,
            count bigint NOT NULL,
            errors bigint NOT NULL,
            sum_ms double precision NOT NULL,
            buckets bigint[] NOT NULL,
            PRIMARY KEY (minute, kind, agent)
        )
        """
    )
    # GET /stats filters by kind or agent and pages newest first; the primary key serves the
    # time range alone and retention's DELETE by minute.
    op.execute("CREATE INDEX latency_stats_kind_minute ON latency_stats (kind, minute DESC)")
    op.execute("CREATE INDEX latency_stats_agent_minute ON latency_stats (agent, minute DESC)")
    # A quantile of merged buckets: the upper bound (ms) of the bucket holding that rank. The
    # bounds are router/store/stats.py's BOUNDS_MS (0.25 ms x 2^(i/4); a test holds the two
    # together), so GET /stats and the Grafana panel over this table compute it one way.
    op.execute(
        """
        CREATE FUNCTION latency_stats_quantile(buckets bigint[], q double precision)
        RETURNS double precision
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT round((0.25 * power(2, (c.i - 1) / 4.0))::numeric, 4)::float8
            FROM (SELECT u.i, sum(u.n) OVER (ORDER BY u.i) AS cum, sum(u.n) OVER () AS total
                  FROM unnest(buckets) WITH ORDINALITY AS u(n, i)) AS c
            WHERE c.cum >= q * c.total AND c.total > 0
            ORDER BY c.i
            LIMIT 1
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION latency_stats_quantile(bigint[], double precision)")
    op.execute("DROP TABLE latency_stats")
