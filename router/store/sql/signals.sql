-- Named queries of the route path. Parameters only, never string building.
-- A query runs from its `-- name:` line to the next one.

-- name: claim_signals
-- The claim is the signal's record, written before any agent hears of it. One statement
-- claims a whole batch, its rows sent as one JSON array (one parameter to encode, not one
-- per column); a row that loses ON CONFLICT is not returned.
INSERT INTO signal_log (log_id, sender_id, kind, status, mode, payload, metadata, event_time,
                        routed_agents, trace_id, payload_hash, claim_expires_at)
SELECT u.log_id, u.sender_id, u.kind, 'in_flight', u.mode, u.payload, u.metadata,
       u.event_time, u.routed_agents, u.trace_id, u.payload_hash,
       now() + make_interval(secs => u.expires_in_s)
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS u(log_id text, sender_id text, kind text, mode text, payload jsonb, metadata jsonb,
          event_time text, routed_agents jsonb, trace_id text, payload_hash text,
          expires_in_s float8)
ON CONFLICT (log_id) DO NOTHING
RETURNING log_id

-- name: existing_signals
-- What a losing claim needs to answer: the stored outcome, or that it is still in flight.
SELECT log_id, kind, status, payload_hash, trace_id, routed_agents, response,
       status = 'in_flight' AND claim_expires_at < now() AS abandoned
FROM signal_log
WHERE log_id = ANY(%(log_ids)s::text[])

-- name: finish_signals
-- The final, durable rows of a batch in ONE statement (one round trip, one atomic commit):
-- the outcome replaces the claim; a DLQ entry is written for each outcome with failed
-- agents, its signal fields taken from the row itself; and an entry the sweeper made for a
-- signal that was delivered after all is resolved. DO NOTHING and SKIP LOCKED: a DLQ entry a
-- replayer holds never makes the group commit wait.
WITH u AS (
    SELECT *
    FROM jsonb_to_recordset(%(rows)s::jsonb)
         AS u(log_id text, status text, response jsonb, attempts int, latency_ms float8,
              dl_agents jsonb, dl_last_error text, dl_attempts int)
), finished AS (
    UPDATE signal_log AS s
    SET status = u.status, response = u.response, attempts = u.attempts,
        latency_ms = u.latency_ms, claim_expires_at = NULL, updated_at = now()
    FROM u
    -- ANY(ids) on the primary key: the planner guesses 100 rows for jsonb_to_recordset and
    -- would otherwise hash-join it against a sequential scan of the whole log.
    WHERE s.log_id = ANY(%(log_ids)s::text[]) AND s.log_id = u.log_id
    RETURNING s.log_id, s.sender_id, s.kind, s.mode, s.payload, s.metadata, s.event_time,
              s.trace_id
), lettered AS (
    INSERT INTO dlq (log_id, sender_id, kind, agents, mode, payload, metadata, event_time,
                     trace_id, last_error, attempts)
    SELECT f.log_id, f.sender_id, f.kind, u.dl_agents, f.mode, f.payload, f.metadata,
           f.event_time, f.trace_id, u.dl_last_error, u.dl_attempts
    FROM finished AS f JOIN u USING (log_id)
    WHERE u.dl_agents IS NOT NULL
    ON CONFLICT (log_id) DO NOTHING
    RETURNING id
), resolved AS (
    UPDATE dlq SET status = 'resolved', last_attempt_at = now()
    WHERE id IN (
        SELECT id FROM dlq
        WHERE log_id = ANY(%(delivered_ids)s::text[]) AND status = 'pending'
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id
)
SELECT (SELECT count(*) FROM finished), (SELECT count(*) FROM lettered),
       (SELECT count(*) FROM resolved)

-- name: sweep_abandoned
-- Claims whose router died before their outcome was recorded go to the DLQ as interrupted,
-- so a replay re-delivers them with the same Idempotency-Key.
WITH expired AS (
    SELECT log_id FROM signal_log
    WHERE status = 'in_flight' AND claim_expires_at < now()
    ORDER BY claim_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE signal_log AS s
    SET status = 'interrupted', claim_expires_at = NULL, updated_at = now()
    FROM expired
    WHERE s.log_id = expired.log_id
    RETURNING s.log_id, s.sender_id, s.kind, s.routed_agents, s.mode, s.payload, s.metadata,
              s.event_time, s.trace_id
)
INSERT INTO dlq (log_id, sender_id, kind, agents, mode, payload, metadata, event_time, trace_id,
                 last_error, attempts)
SELECT log_id, sender_id, kind, routed_agents, mode, payload, metadata, event_time, trace_id,
       'interrupted: the router stopped before this signal''s outcome was recorded; '
       'a replay delivers it again with the same Idempotency-Key', 0
FROM moved
ON CONFLICT (log_id) DO NOTHING
RETURNING id

-- name: dlq_backlog
SELECT count(*) FROM dlq WHERE status = 'pending'
