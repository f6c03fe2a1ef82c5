-- Retention's statements (router/store/partitions.py). Partition DDL names tables, which
-- cannot be parameters; partitions.py composes it with psycopg.sql identifiers and literals.

-- name: partition_bounds
-- The partitions of a parent and their bounds, read back from PostgreSQL's own text of them
-- (each bound literal carries its UTC offset, so the session's TimeZone does not matter).
SELECT c.relname,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']+)''\)')::timestamptz,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \(''([^'']+)''\)')::timestamptz,
       i.inhdetachpending
FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = %(parent)s::regclass
ORDER BY 2

-- name: partition_days_ahead
-- The UTC days that must have a partition: today and the next `days` ones.
SELECT d::date
FROM generate_series(date_trunc('day', now() AT TIME ZONE 'UTC'),
                     date_trunc('day', now() AT TIME ZONE 'UTC') + make_interval(days => %(days)s),
                     interval '1 day') AS d

-- name: retention_cutoff
-- A partition whose upper bound is at or before this holds only rows older than retention.
SELECT now() - make_interval(secs => %(retention_s)s)

-- name: maintenance_try_lock
SELECT pg_try_advisory_lock(%(key)s)

-- name: maintenance_unlock
SELECT pg_advisory_unlock(%(key)s)
