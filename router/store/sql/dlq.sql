-- Fixed fragments and queries of the DLQ API and its replayers, joined with psycopg.sql by
-- router/store/dlq.py. Values are always parameters.

-- name: dlq_select
SELECT id, log_id, sender_id, kind, agents, mode, payload, metadata, event_time, trace_id,
       last_error, attempts, replay_count, status, created_at, last_attempt_at
FROM dlq

-- name: dlq_where_id
id = %(id)s

-- name: dlq_where_status
status = %(status)s

-- name: dlq_where_agent
-- Containment, which the GIN index dlq_agents (jsonb_path_ops) answers.
agents @> %(agent)s::jsonb

-- name: dlq_where_kind
kind = %(kind)s

-- name: dlq_where_before_id
id < %(before_id)s

-- name: dlq_order_newest
ORDER BY id DESC
LIMIT %(limit)s

-- name: dlq_where_claimable
-- A bulk round takes pending entries older than the round, each at most once: an entry
-- this round (or a concurrent one) already attempted has last_attempt_at after its start.
-- created_at < … is also what bounds the scan of dlq_pending_oldest.
status = 'pending' AND created_at < %(round_started)s
AND (last_attempt_at IS NULL OR last_attempt_at < %(round_started)s)

-- name: dlq_where_after_position
-- Where this round's previous claims ended: what lies before was claimed, attempted, or
-- held by another replayer, so a long failing backlog is not rescanned by every claim.
(created_at, id) > (%(after_created_at)s, %(after_id)s)

-- name: dlq_where_replayable_ids
-- A replay by id still tries a parked entry; resolved and discarded ones never again.
id = ANY(%(ids)s::bigint[]) AND status IN ('pending', 'parked')

-- name: dlq_order_oldest
ORDER BY created_at, id
LIMIT %(limit)s

-- name: dlq_skip_locked
FOR UPDATE SKIP LOCKED

-- name: dlq_lock_nowait
FOR UPDATE NOWAIT

-- name: dlq_round_clock
-- The database's clock, the one created_at and last_attempt_at are written with.
SELECT clock_timestamp()

-- name: dlq_statuses
SELECT id, status FROM dlq WHERE id = ANY(%(ids)s::bigint[])

-- name: dlq_discard
UPDATE dlq SET status = 'discarded' WHERE id = %(id)s

-- name: dlq_signal_rows
SELECT log_id, status, response, updated_at FROM signal_log
WHERE log_id = ANY(%(log_ids)s::text[])

-- name: dlq_settle
-- last_attempt_at is the wall clock at settle time, not the transaction's start: a round
-- that began while this batch was being dispatched must see the entry as attempted.
UPDATE dlq AS d
SET status = u.status, agents = u.agents::jsonb, last_error = u.last_error,
    attempts = u.attempts, replay_count = u.replay_count, last_attempt_at = clock_timestamp()
FROM unnest(%(id)s::bigint[], %(status)s::text[], %(agents)s::text[], %(last_error)s::text[],
            %(attempts)s::int[], %(replay_count)s::int[])
     AS u(id, status, agents, last_error, attempts, replay_count)
WHERE d.id = ANY(%(id)s::bigint[]) AND d.id = u.id

-- name: dlq_settle_signals
-- A compare-and-set on what the replay read when it claimed the entry: a row that changed
-- since (or a claim still in flight, which belongs to the route path) is never overwritten.
UPDATE signal_log AS s
SET status = u.status, response = u.response::jsonb, attempts = s.attempts + u.attempts,
    updated_at = now()
FROM unnest(%(log_id)s::text[], %(status)s::text[], %(response)s::text[], %(attempts)s::int[],
            %(read_status)s::text[], %(read_updated_at)s::timestamptz[])
     AS u(log_id, status, response, attempts, read_status, read_updated_at)
WHERE s.log_id = ANY(%(log_id)s::text[]) AND s.log_id = u.log_id AND s.status <> 'in_flight'
  AND s.status = u.read_status AND s.updated_at = u.read_updated_at
