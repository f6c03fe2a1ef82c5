-- Named queries of the route path. Parameters only, never string building.
-- A query runs from its `-- name:` line to the next one.

-- name: claim_signals
-- The claim is the signal's record, written before any agent hears of it. One
-- statement claims a whole batch; a row that loses ON CONFLICT is not returned.
INSERT INTO signal_log (log_id, sender_id, kind, status, mode, payload, metadata, event_time,
                        routed_agents, trace_id, payload_hash, claim_expires_at)
SELECT u.log_id, u.sender_id, u.kind, 'in_flight', u.mode, u.payload::jsonb, u.metadata::jsonb,
       u.event_time, u.routed_agents::jsonb, u.trace_id, u.payload_hash,
       now() + make_interval(secs => u.expires_in_s)
FROM unnest(%(log_id)s::text[], %(sender_id)s::text[], %(kind)s::text[], %(mode)s::text[],
            %(payload)s::text[], %(metadata)s::text[], %(event_time)s::text[],
            %(routed_agents)s::text[], %(trace_id)s::text[], %(payload_hash)s::text[],
            %(expires_in_s)s::float8[])
     AS u(log_id, sender_id, kind, mode, payload, metadata, event_time, routed_agents, trace_id,
          payload_hash, expires_in_s)
ON CONFLICT (log_id) DO NOTHING
RETURNING log_id

-- name: existing_signals
-- What a losing claim needs to answer: the stored outcome, or that it is still in flight.
SELECT log_id, kind, status, payload_hash, trace_id, routed_agents, response,
       status = 'in_flight' AND claim_expires_at < now() AS abandoned
FROM signal_log
WHERE log_id = ANY(%(log_ids)s::text[])

-- name: finish_signals
-- The final, durable row: the outcome replaces the claim.
UPDATE signal_log AS s
SET status = u.status, response = u.response::jsonb, attempts = u.attempts,
    latency_ms = u.latency_ms, claim_expires_at = NULL, updated_at = now()
FROM unnest(%(log_id)s::text[], %(status)s::text[], %(response)s::text[], %(attempts)s::int[],
            %(latency_ms)s::float8[]) AS u(log_id, status, response, attempts, latency_ms)
WHERE s.log_id = u.log_id

-- name: dead_letter_signals
-- One DLQ entry per signal with a failed agent. A conflict means the sweeper took the
-- claim for abandoned meanwhile; its entry (every routed agent) stays: DO NOTHING never
-- waits on a row lock, so a replayer holding that entry cannot stall the group commit.
INSERT INTO dlq (log_id, sender_id, kind, agents, mode, payload, metadata, event_time, trace_id,
                 last_error, attempts)
SELECT u.log_id, u.sender_id, u.kind, u.agents::jsonb, u.mode, u.payload::jsonb,
       u.metadata::jsonb, u.event_time, u.trace_id, u.last_error, u.attempts
FROM unnest(%(log_id)s::text[], %(sender_id)s::text[], %(kind)s::text[], %(agents)s::text[],
            %(mode)s::text[], %(payload)s::text[], %(metadata)s::text[], %(event_time)s::text[],
            %(trace_id)s::text[], %(last_error)s::text[], %(attempts)s::int[])
     AS u(log_id, sender_id, kind, agents, mode, payload, metadata, event_time, trace_id,
          last_error, attempts)
ON CONFLICT (log_id) DO NOTHING
RETURNING id

-- name: resolve_interrupted
-- A signal delivered after the sweeper gave its claim up: its DLQ entry has nothing left to
-- do. SKIP LOCKED: an entry a replayer holds is left to that replay rather than waited for.
UPDATE dlq SET status = 'resolved', last_attempt_at = now()
WHERE id IN (
    SELECT id FROM dlq
    WHERE log_id = ANY(%(log_ids)s::text[]) AND status = 'pending'
    FOR UPDATE SKIP LOCKED
)

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
