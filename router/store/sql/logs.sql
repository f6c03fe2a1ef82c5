-- Fixed fragments of GET /logs. router/store/logs.py joins the ones a request needs with
-- psycopg.sql, so every filter combination is its own statement with its own plan (and
-- index); a catch-all `(%(x)s IS NULL OR col = %(x)s)` would get one generic plan for all.
-- Values are always parameters.

-- name: logs_select
SELECT log_id, sender_id, kind, status, mode, payload, metadata, event_time, routed_agents,
       response, trace_id, attempts, latency_ms, created_at, updated_at
FROM signal_log

-- name: logs_where_log_id
log_id = %(log_id)s

-- name: logs_where_sender
sender_id = %(sender_id)s

-- name: logs_where_kind
kind = %(kind)s

-- name: logs_where_status
status = %(status)s

-- name: logs_where_since
created_at >= %(since)s

-- name: logs_where_until
created_at < %(until)s

-- name: logs_where_after_cursor
-- A row comparison, so the (…, created_at DESC, log_id DESC) indexes seek straight to it.
(created_at, log_id) < (%(cursor_created_at)s, %(cursor_log_id)s)

-- name: logs_order_newest
ORDER BY created_at DESC, log_id DESC
LIMIT %(limit)s
