-- Named queries of the route path. Parameters only, never string building.
-- A query runs from its `-- name:` line to the next one.

-- name: claim_signals
-- The claim is the signal's record, written before any agent hears of it. One statement
-- claims a whole batch, its rows sent as one JSON array (one parameter to encode, not one
-- per column); a claim whose log_id any partition holds already is not inserted and not
-- returned. lock_log_id (migration 0004) locks each log_id for the transaction and looks it
-- up on a fresh snapshot, so two routers claiming one log_id across a partition boundary
-- (midnight) still leave one row; the writer sends the batch sorted by log_id, so two
-- batches take their locks in one order. A row is inserted only while its waiter still
-- waits (`valid_before`, on the database's clock): a claim held up by a stall can never
-- land after its caller was told 503, nothing dispatched. A claim that is not `deduplicable`
-- (its log_id derived from the receive time, which no other signal can carry) skips the
-- lookup: on a table of daily partitions it is most of the statement's cost. mode is read
-- as its enum type: signal_log's vocabulary is checked where rows come in (migration 0006).
-- A won claim returns its partition, which its outcome is written into, and its row's ctid.
INSERT INTO signal_log (log_id, sender_id, kind, status, mode, payload, metadata, event_time,
                        routed_agents, trace_id, payload_hash, claim_token, claim_expires_at)
SELECT u.log_id, u.sender_id, u.kind, 'in_flight', u.mode, u.payload, u.metadata,
       u.event_time, u.routed_agents, u.trace_id, u.payload_hash, u.claim_token,
       now() + make_interval(secs => u.expires_in_s)
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS u(log_id text, sender_id text, kind text, mode signal_mode, payload jsonb,
          metadata jsonb, event_time text, routed_agents jsonb, trace_id text,
          payload_hash text, claim_token text, expires_in_s float8, valid_before float8,
          deduplicable boolean)
WHERE clock_timestamp() < to_timestamp(u.valid_before)
  -- CASE, not OR: its order of evaluation is guaranteed; a row without the flag is locked.
  AND CASE WHEN u.deduplicable IS FALSE THEN true ELSE lock_log_id(u.log_id) IS NULL END
ON CONFLICT DO NOTHING
RETURNING log_id, created_at, tableoid::regclass::text, ctid::text

-- name: void_claims
-- Claims that committed after their waiter had given up (it answered 503): nothing was
-- dispatched, so the claim is removed rather than left to be swept and replayed.
DELETE FROM signal_log
WHERE log_id = ANY(%(log_ids)s::text[]) AND claim_token = ANY(%(tokens)s::text[])
  AND status = 'in_flight'

-- name: existing_signals
-- What a losing claim needs to answer: the stored outcome, or that it is still in flight.
SELECT log_id, kind, status, payload_hash, trace_id, routed_agents, response,
       status = 'in_flight' AND claim_expires_at < now() AS abandoned
FROM signal_log
WHERE log_id = ANY(%(log_ids)s::text[])

-- name: finish_signals
-- The final, durable rows of a batch in ONE statement (one round trip, one atomic commit).
-- Each outcome is the whole row, so it stands on its own: when a database crash took the
-- unflushed claim with it, the row is inserted. Otherwise it replaces the claim only as a
-- compare-and-set: still this request's claim (its token) and still in flight, so nothing
-- the sweeper or another request did is ever overwritten. The result says, per log_id, what
-- was written: the statement ends with one of the two answers below, and its condition is
-- the one below or none (queries.finish_query).
-- The claim's created_at names its partition, and the rows go straight into it: `{partition}`
-- is its name as claim_signals returned it (ON CONFLICT on the partitioned parent looks up
-- the partition's ancestors and routes each row, in every statement). A row is inserted only
-- when no partition holds the log_id (lock_log_id, as in claim_signals), so a lost claim
-- taken over meanwhile by another request is never doubled; while the claim's own row is
-- there (every outcome but a crash's), that lookup of every partition is skipped, since the
-- claim holds the log_id already. The row is found where the claim left it (claim_tid, its
-- ctid): a TID scan, whatever the partition's statistics say; a row moved since (the
-- sweeper updated it, VACUUM FULL) is not found there and takes the lookup, as a lost one
-- does. A log_id that is not `deduplicable` has no other request to be taken over by: its
-- row is the claim's, or it is lost. status, mode and latency_ms are read as the types that
-- check signal_log's vocabulary (migration 0006).
WITH u AS (
    SELECT c.*, o.status, o.response, o.attempts, o.latency_ms, o.dl_agents, o.dl_last_error,
           o.dl_attempts
    FROM jsonb_to_recordset(%(rows)s::jsonb)
         AS o(claim jsonb, status signal_status, response jsonb, attempts int,
              latency_ms latency_ms, dl_agents jsonb, dl_last_error text, dl_attempts int),
         jsonb_to_record(o.claim)
         AS c(log_id text, sender_id text, kind text, mode signal_mode, payload jsonb,
              metadata jsonb, event_time text, routed_agents jsonb, trace_id text,
              payload_hash text, claim_token text, created_at timestamptz,
              claim_tid tid, deduplicable boolean)
), finished AS (
    INSERT INTO {partition} AS s (log_id, sender_id, kind, status, mode, payload, metadata,
                                  event_time, routed_agents, trace_id, payload_hash,
                                  claim_token, response, attempts, latency_ms, created_at)
    SELECT log_id, sender_id, kind, status, mode, payload, metadata, event_time,
           routed_agents, trace_id, payload_hash, claim_token, response, attempts, latency_ms,
           created_at
    FROM u
    {where}
    ON CONFLICT (log_id, created_at) DO UPDATE
    SET status = excluded.status, response = excluded.response,
        attempts = excluded.attempts, latency_ms = excluded.latency_ms,
        claim_expires_at = NULL, updated_at = now()
    -- Or already this very outcome: a retry after a commit whose answer was lost is a no-op
    -- that reports success, not a conflict.
    WHERE s.claim_token = excluded.claim_token
      AND (s.status = 'in_flight' OR s.status = excluded.status)
    RETURNING s.log_id
)

-- name: finish_where_repeatable
-- finish_signals' condition when a log_id of the batch can repeat (a batch of none has no
-- condition: every row is its claim's, or a lost one's).
-- OFFSET 0: a probe per row, never a hashed read of the whole partition.
WHERE CASE WHEN deduplicable IS FALSE THEN true
           WHEN EXISTS (SELECT 1 FROM {partition} AS c
                        WHERE c.ctid = u.claim_tid AND c.log_id = u.log_id
                          AND c.created_at = u.created_at OFFSET 0) THEN true
           ELSE coalesce(lock_log_id(log_id) = created_at, true) END

-- name: finish_answer
-- finish_signals' end when no outcome of the batch has failed agents: no DLQ insert to set
-- up (its set-up alone is paid by every statement that holds one).
SELECT log_id, false AS lettered FROM finished

-- name: finish_answer_lettering
-- finish_signals' end when an outcome has failed agents: a DLQ entry for each one written.
, lettered AS (
    INSERT INTO dlq_open (log_id, sender_id, kind, agents, mode, payload, metadata, event_time,
                     trace_id, last_error, attempts)
    SELECT u.log_id, u.sender_id, u.kind, u.dl_agents, u.mode, u.payload, u.metadata,
           u.event_time, u.trace_id, u.dl_last_error, u.dl_attempts
    FROM finished AS f JOIN u USING (log_id)
    WHERE u.dl_agents IS NOT NULL
    ON CONFLICT (log_id) DO NOTHING
    RETURNING log_id
)
SELECT f.log_id, l.log_id IS NOT NULL AS lettered
FROM finished AS f LEFT JOIN lettered AS l USING (log_id)

-- name: sweep_abandoned
-- Claims whose router died before their outcome was recorded go to the DLQ as interrupted,
-- so a replay re-delivers them with the same Idempotency-Key.
WITH expired AS (
    SELECT log_id, created_at FROM signal_log
    WHERE status = 'in_flight' AND claim_expires_at < now()
    ORDER BY claim_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE signal_log AS s
    SET status = 'interrupted', claim_expires_at = NULL, updated_at = now()
    FROM expired
    WHERE s.log_id = expired.log_id AND s.created_at = expired.created_at
    RETURNING s.log_id, s.sender_id, s.kind, s.routed_agents, s.mode, s.payload, s.metadata,
              s.event_time, s.trace_id
)
INSERT INTO dlq_open (log_id, sender_id, kind, agents, mode, payload, metadata, event_time,
                      trace_id, last_error, attempts)
SELECT log_id, sender_id, kind, routed_agents, mode, payload, metadata, event_time, trace_id,
       'interrupted: the router stopped before this signal''s outcome was recorded; '
       'a replay delivers it again with the same Idempotency-Key', 0
FROM moved
ON CONFLICT (log_id) DO NOTHING
RETURNING id

-- name: dlq_backlog
SELECT count(*) FROM dlq WHERE status = 'pending'
