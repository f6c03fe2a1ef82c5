-- The DLQ API's and the replayers' statements (router/store/dlq.py). Values are always
-- parameters.

-- name: dlq_one
SELECT id, log_id, sender_id, kind, agents, mode, payload, metadata, event_time, trace_id,
       last_error, attempts, replay_count, status, created_at, last_attempt_at
FROM dlq
WHERE id = %(id)s

-- name: dlq_one_for_discard
-- NOWAIT: an entry a replayer holds is busy (409), rather than a wait of a whole dispatch.
SELECT id, log_id, sender_id, kind, agents, mode, payload, metadata, event_time, trace_id,
       last_error, attempts, replay_count, status, created_at, last_attempt_at
FROM dlq
WHERE id = %(id)s
FOR UPDATE NOWAIT

-- name: dlq_page
-- Newest first. Every filter is optional (NULL drops it); run unprepared (store/reads.py), so
-- each execution is planned with its values: dlq_status_id for a status, the GIN index
-- dlq_agents for the containment `agents @> ["name"]`, dlq_log_id_key for one signal's entry,
-- the primary key otherwise.
SELECT id, log_id, sender_id, kind, agents, mode, payload, metadata, event_time, trace_id,
       last_error, attempts, replay_count, status, created_at, last_attempt_at
FROM dlq
WHERE (%(log_id)s::text IS NULL OR log_id = %(log_id)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(agent)s::jsonb IS NULL OR agents @> %(agent)s::jsonb)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s

-- name: dlq_claimable
-- What a bulk replay round would claim: pending entries older than the round, oldest first
-- over dlq_pending_oldest, each at most once per round (an entry this round or a concurrent
-- one already attempted has last_attempt_at after its start; created_at < … also bounds the
-- scan). `after` is where this round's previous claims ended: what lies before was claimed,
-- attempted, or held by another replayer, so a long failing backlog is not rescanned.
-- dlq_claim_round is the same statement with the lock.
SELECT id, log_id, sender_id, kind, agents, mode, payload, metadata, event_time, trace_id,
       last_error, attempts, replay_count, status, created_at, last_attempt_at
FROM dlq
WHERE status = 'pending' AND created_at < %(round_started)s
  AND (last_attempt_at IS NULL OR last_attempt_at < %(round_started)s)
  AND (%(agent)s::jsonb IS NULL OR agents @> %(agent)s::jsonb)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(after_created_at)s::timestamptz IS NULL
       OR (created_at, id) > (%(after_created_at)s::timestamptz, %(after_id)s::bigint))
ORDER BY created_at, id
LIMIT %(limit)s

-- name: dlq_claim_round
-- dlq_claimable, locked for the batch's dispatch; rows another replayer holds are skipped.
SELECT id, log_id, sender_id, kind, agents, mode, payload, metadata, event_time, trace_id,
       last_error, attempts, replay_count, status, created_at, last_attempt_at
FROM dlq
WHERE status = 'pending' AND created_at < %(round_started)s
  AND (last_attempt_at IS NULL OR last_attempt_at < %(round_started)s)
  AND (%(agent)s::jsonb IS NULL OR agents @> %(agent)s::jsonb)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(after_created_at)s::timestamptz IS NULL
       OR (created_at, id) > (%(after_created_at)s::timestamptz, %(after_id)s::bigint))
ORDER BY created_at, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: dlq_replayable_ids
-- A replay by id still tries a parked entry; resolved and discarded ones never again.
-- dlq_claim_ids is the same statement with the lock.
SELECT id, log_id, sender_id, kind, agents, mode, payload, metadata, event_time, trace_id,
       last_error, attempts, replay_count, status, created_at, last_attempt_at
FROM dlq
WHERE id = ANY(%(ids)s::bigint[]) AND status IN ('pending', 'parked')
ORDER BY created_at, id

-- name: dlq_claim_ids
SELECT id, log_id, sender_id, kind, agents, mode, payload, metadata, event_time, trace_id,
       last_error, attempts, replay_count, status, created_at, last_attempt_at
FROM dlq
WHERE id = ANY(%(ids)s::bigint[]) AND status IN ('pending', 'parked')
ORDER BY created_at, id
FOR UPDATE SKIP LOCKED

-- name: dlq_pending_count
-- The size of a bulk replay before it starts, for its progress ("40 of 120").
SELECT count(*) FROM dlq
WHERE status = 'pending'
  AND (%(agent)s::jsonb IS NULL OR agents @> %(agent)s::jsonb)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)

-- name: dlq_round_clock
-- The database's clock, the one created_at and last_attempt_at are written with.
SELECT clock_timestamp()

-- name: dlq_statuses
SELECT id, status FROM dlq WHERE id = ANY(%(ids)s::bigint[])

-- name: dlq_discard
-- Closing an entry moves it from dlq_open to the day's closed partition (retention's unit).
UPDATE dlq SET status = 'discarded', closed_at = clock_timestamp() WHERE id = %(id)s

-- name: dlq_signal_rows
SELECT log_id, status, response, updated_at FROM signal_log
WHERE log_id = ANY(%(log_ids)s::text[])

-- name: dlq_settle
-- last_attempt_at is the wall clock at settle time, not the transaction's start: a round
-- that began while this batch was being dispatched must see the entry as attempted. A
-- resolved entry moves from dlq_open to the day's closed partition (retention's unit).
UPDATE dlq AS d
SET status = u.status, agents = u.agents::jsonb, last_error = u.last_error,
    attempts = u.attempts, replay_count = u.replay_count, last_attempt_at = clock_timestamp(),
    closed_at = CASE WHEN u.status IN ('resolved', 'discarded') THEN clock_timestamp() END
FROM unnest(%(id)s::bigint[], %(status)s::text[], %(agents)s::text[], %(last_error)s::text[],
            %(attempts)s::int[], %(replay_count)s::int[])
     AS u(id, status, agents, last_error, attempts, replay_count)
WHERE d.id = ANY(%(id)s::bigint[]) AND d.id = u.id

-- name: dlq_settle_signals
-- A compare-and-set on what the replay read when it claimed the entry: a row that changed
-- since (or a claim still in flight, which belongs to the route path) is never overwritten.
-- status is read as signal_status, which checks signal_log's vocabulary (migration 0006).
UPDATE signal_log AS s
SET status = u.status, response = u.response::jsonb, attempts = s.attempts + u.attempts,
    updated_at = now()
FROM unnest(%(log_id)s::text[], %(status)s::signal_status[], %(response)s::text[],
            %(attempts)s::int[], %(read_status)s::text[], %(read_updated_at)s::timestamptz[])
     AS u(log_id, status, response, attempts, read_status, read_updated_at)
WHERE s.log_id = ANY(%(log_id)s::text[]) AND s.log_id = u.log_id AND s.status <> 'in_flight'
  AND s.status = u.read_status AND s.updated_at = u.read_updated_at
