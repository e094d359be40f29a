-- The jobs' leases: claim with a lease, renew, reschedule, finish, release, expire.
-- Each kind of state change is one statement; every write by a claimer names its lease token.

-- name: claim_due_jobs
-- Due pending jobs by priority then due time. The claim moves next_poll_at to the lease expiry,
-- so a crashed holder's jobs become due again when the lease runs out; lease_token fences writes.
-- One account's jobs ($4): each account is claimed for with its own budget and token.
WITH due AS (
    SELECT job_id
      FROM harvester.jobs
     WHERE state = 'pending' AND account = $4 AND next_poll_at <= now()
     ORDER BY priority DESC, next_poll_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
UPDATE harvester.jobs AS j
   SET lease_owner = $1,
       lease_expires_at = now() + make_interval(secs => $3),
       next_poll_at = now() + make_interval(secs => $3),
       lease_token = j.lease_token + 1,
       updated_at = now()
  FROM due
 WHERE j.job_id = due.job_id
RETURNING j.job_id, j.lease_token, j.job_type, j.upstream_status, j.polls, j.not_found_count,
          j.fault_count, extract(epoch FROM now() - j.enqueued_at)::float8 AS age_s

-- name: extend_leases
UPDATE harvester.jobs
   SET lease_expires_at = now() + make_interval(secs => $3),
       next_poll_at = GREATEST(next_poll_at, now() + make_interval(secs => $3))
 WHERE job_id = ANY($2::uuid[]) AND lease_owner = $1 AND state = 'pending'

-- name: reschedule_polled_job
-- After a poll that did not finish the job: count the request, note what was learned, set the
-- next poll and drop the lease. Fenced by lease_token. Neither a poll nor a hold undoes what a
-- list page or the stream wrote meanwhile. An end seen while the job was claimed (its status is
-- now one of $12, the upstream ends, and NOT $11: it was not known finished when claimed) makes
-- it due at once: the 202 of a poll in flight then is older than that end. A hold (no request
-- spent: $4 = 0, the job was claimed before its first poll was worth a request, so nothing was
-- known of it) keeps whatever due time news of it written meanwhile gave, or a defer past the
-- lease's end.
UPDATE harvester.jobs
   SET next_poll_at = CASE
           WHEN NOT $11 AND upstream_status = ANY($12::text[]) THEN now()
           WHEN $4 > 0 THEN now() + make_interval(secs => $3)
           WHEN upstream_status IS NOT NULL OR next_poll_at > lease_expires_at THEN next_poll_at
           ELSE now() + make_interval(secs => $3) END,
       polls = polls + $4,
       last_polled_at = CASE WHEN $4 > 0 THEN now() ELSE last_polled_at END,
       last_http_status = COALESCE($5, last_http_status),
       upstream_status = CASE
           WHEN NOT $11 AND upstream_status = ANY($12::text[]) THEN upstream_status
           ELSE COALESCE($6, upstream_status) END,
       job_type = COALESCE($7, job_type),
       not_found_count = $8,
       fault_count = $9,
       last_error = $10,
       lease_owner = NULL,
       lease_expires_at = NULL,
       updated_at = now()
 WHERE job_id = $1 AND lease_token = $2 AND state = 'pending'

-- name: make_auth_held_jobs_due
-- After a token rotation: the account's jobs held back by a refused credential are due again.
UPDATE harvester.jobs
   SET next_poll_at = now(), updated_at = now()
 WHERE account = $1 AND state = 'pending' AND last_http_status IN (401, 402, 403)
   AND (lease_expires_at IS NULL OR lease_expires_at < now())

-- name: release_jobs
-- Give leases back without spending anything (shutdown, pauses): due again at the given delay.
UPDATE harvester.jobs
   SET next_poll_at = now() + make_interval(secs => $3),
       lease_owner = NULL,
       lease_expires_at = NULL,
       updated_at = now()
 WHERE job_id = ANY($2::uuid[]) AND lease_owner = $1 AND state = 'pending'

-- name: finish_job
-- Every terminal state a job reaches by a response (harvested, failed, cancelled, not_found,
-- rejected, expired by a poll). A claimer names its lease token ($2) and changes the job only while
-- it still holds it; a writer without a lease ($2 NULL: import) overwrites whatever state it had.
-- NULL counts ($9, $10) and NULL type or status ($4, $5) keep what the row has.
UPDATE harvester.jobs
   SET state = $3,
       job_type = COALESCE($4, job_type),
       upstream_status = COALESCE($5, upstream_status),
       finished_at = now(),
       last_http_status = COALESCE($6::integer, last_http_status),
       polls = polls + $7::integer,
       last_polled_at = CASE WHEN $7::integer > 0 THEN now() ELSE last_polled_at END,
       last_error = $8,
       not_found_count = COALESCE($9::integer, not_found_count),
       fault_count = COALESCE($10::integer, fault_count),
       lease_owner = NULL,
       lease_expires_at = NULL,
       updated_at = now()
 WHERE job_id = $1 AND ($2::bigint IS NULL OR (lease_token = $2 AND state = 'pending'))

-- name: expire_stale_jobs
-- Pending longer than give_up_after ($1 s) and not leased: expired, at most $2 per statement, oldest
-- first along the pending enqueued_at index, so no backlog is large enough to make one statement
-- run into the statement timeout. The caller repeats while a batch comes back full.
WITH stale AS (
    SELECT job_id
      FROM harvester.jobs
     WHERE state = 'pending'
       AND enqueued_at < now() - make_interval(secs => $1)
       AND (lease_expires_at IS NULL OR lease_expires_at < now())
     ORDER BY enqueued_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
UPDATE harvester.jobs AS j
   SET state = 'expired',
       finished_at = now(),
       last_error = 'gave up: pending longer than give_up_after',
       lease_owner = NULL,
       lease_expires_at = NULL,
       updated_at = now()
  FROM stale
 WHERE j.job_id = stale.job_id

-- name: select_next_due_in
SELECT extract(epoch FROM min(next_poll_at) - now())::float8
  FROM harvester.jobs
 WHERE state = 'pending' AND account = $1

-- name: exists_pending_job
-- Stops at the first pending row instead of counting a backlog.
SELECT EXISTS (SELECT 1 FROM harvester.jobs WHERE state = 'pending' AND account = $1)

-- name: exists_pending_job_of
SELECT EXISTS (SELECT 1 FROM harvester.jobs WHERE state = 'pending' AND account = ANY($1::text[]))
