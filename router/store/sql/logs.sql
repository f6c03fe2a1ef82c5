-- GET /logs: one row, or a keyset page newest first. Values are always parameters.

-- name: logs_one
SELECT log_id, sender_id, kind, status, mode, payload, metadata, event_time, routed_agents,
       response, trace_id, attempts, latency_ms, created_at, updated_at
FROM signal_log
WHERE log_id = %(log_id)s

-- name: logs_page
-- Every filter is optional: a NULL parameter drops its condition. The page is run unprepared
-- (store/reads.py), so PostgreSQL plans each execution with its values, folds the dropped
-- conditions away and picks the index of the filter given (signal_log_sender_created,
-- _kind_created, _status_created, or signal_log_created); test_query_plans.py checks each.
-- The cursor is a row comparison, so those (…, created_at DESC, log_id DESC) indexes seek to it.
SELECT log_id, sender_id, kind, status, mode, payload, metadata, event_time, routed_agents,
       response, trace_id, attempts, latency_ms, created_at, updated_at
FROM signal_log
WHERE (%(sender_id)s::text IS NULL OR sender_id = %(sender_id)s::text)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
  AND (%(cursor_created_at)s::timestamptz IS NULL
       OR (created_at, log_id) < (%(cursor_created_at)s::timestamptz, %(cursor_log_id)s::text))
ORDER BY created_at DESC, log_id DESC
LIMIT %(limit)s
