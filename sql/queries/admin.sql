-- The queue as the commands see it: enqueue, requeue, and the counts `harvester status` and the
-- health server read. No lease: none of these is a claimer's write.

-- name: enqueue_jobs
-- No conflict target and no RETURNING: both read the table, and the producer role may only
-- INSERT. job_id is the only unique key, so this skips exactly the known ids; the command tag
-- counts the new ones.
INSERT INTO harvester.jobs (job_id, priority, tags, account)
SELECT id, $2::smallint, $3::jsonb, $4::text FROM unnest($1::uuid[]) AS t(id)
ON CONFLICT DO NOTHING

-- name: count_jobs_by_state
SELECT state, count(*)::bigint AS jobs, COALESCE(sum(polls), 0)::bigint AS polls
  FROM harvester.jobs
 GROUP BY state

-- name: count_jobs_by_account
-- Jobs per account and state, for `harvester status`; pending ones through the view /readyz reads.
SELECT account, state, count(*)::bigint AS jobs
  FROM harvester.jobs
 GROUP BY account, state
 ORDER BY account, state

-- name: select_pending_by_account
SELECT account, pending FROM harvester.pending_by_account ORDER BY account

-- name: select_oldest_pending_age
SELECT extract(epoch FROM now() - min(enqueued_at))::float8
  FROM harvester.jobs
 WHERE state = 'pending'

-- name: select_recent_errors
SELECT job_id, state, last_http_status, last_error, updated_at
  FROM harvester.jobs
 WHERE last_error IS NOT NULL
 ORDER BY updated_at DESC
 LIMIT $1

-- name: requeue_jobs_by_id
UPDATE harvester.jobs
   SET state = 'pending', next_poll_at = now(), finished_at = NULL, not_found_count = 0,
       fault_count = 0, last_error = NULL, lease_owner = NULL, lease_expires_at = NULL,
       enqueued_at = now(), updated_at = now()
 WHERE job_id = ANY($1::uuid[]) AND state <> 'pending' AND ($2::text IS NULL OR state = $2)

-- name: requeue_jobs_by_state
UPDATE harvester.jobs
   SET state = 'pending', next_poll_at = now(), finished_at = NULL, not_found_count = 0,
       fault_count = 0, last_error = NULL, lease_owner = NULL, lease_expires_at = NULL,
       enqueued_at = now(), updated_at = now()
 WHERE state = $1
