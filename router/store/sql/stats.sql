-- name: stats_add
-- One process's counts since its last flush, added into the rows (never replacing them): every
-- router process contributes. %(rows)s is a JSON array of {minute, kind, agent, count, errors,
-- sum_ms, buckets}; the buckets of a row and of the addition have the same length.
INSERT INTO latency_stats AS s (minute, kind, agent, count, errors, sum_ms, buckets)
SELECT r.minute, r.kind, r.agent, r.count, r.errors, r.sum_ms,
       ARRAY(SELECT jsonb_array_elements_text(r.buckets)::bigint)
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS r(minute timestamptz, kind text, agent text, count bigint, errors bigint,
          sum_ms double precision, buckets jsonb)
ON CONFLICT (minute, kind, agent) DO UPDATE SET
    count = s.count + excluded.count,
    errors = s.errors + excluded.errors,
    sum_ms = s.sum_ms + excluded.sum_ms,
    buckets = ARRAY(SELECT a + b FROM unnest(s.buckets, excluded.buckets) AS t(a, b))

-- name: stats_page
-- Newest first; a NULL parameter drops its filter (run unprepared, so the plan uses the index
-- of the filter given: latency_stats_kind_minute, _agent_minute, or the primary key). Each
-- percentile is the upper bound of the bucket holding that rank of the merged buckets
-- (latency_stats_quantile, migration 0003), so it is within one bucket of the exact one.
SELECT minute, kind, agent, count, errors,
       round((sum_ms / count)::numeric, 3)::float8 AS avg_ms,
       latency_stats_quantile(buckets, 0.50) AS p50_ms,
       latency_stats_quantile(buckets, 0.95) AS p95_ms,
       latency_stats_quantile(buckets, 0.99) AS p99_ms
FROM latency_stats
WHERE (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(agent)s::text IS NULL OR agent = %(agent)s::text)
  AND (%(since)s::timestamptz IS NULL OR minute >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR minute < %(until)s::timestamptz)
ORDER BY minute DESC, kind, agent
LIMIT %(limit)s

-- name: stats_expire
-- STATS_RETENTION: rows of minutes older than the cutoff go (by the primary key's range).
DELETE FROM latency_stats WHERE minute < %(cutoff)s::timestamptz
