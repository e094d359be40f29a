-- Completion discovery: the shared watermark and what a list page tells about our pending jobs.

-- name: insert_discovery_row
INSERT INTO harvester.discovery (credential) VALUES ($1) ON CONFLICT DO NOTHING

-- name: claim_discovery_pass
-- Take the discovery lease if nobody holds it and the last pass is at least $3 seconds old.
UPDATE harvester.discovery
   SET lease_owner = $2, lease_expires_at = now() + make_interval(secs => $4)
 WHERE credential = $1
   AND (lease_expires_at IS NULL OR lease_expires_at < now() OR lease_owner = $2)
   AND (last_pass_at IS NULL OR last_pass_at <= now() - make_interval(secs => $3))
RETURNING watermark, (SELECT min(enqueued_at) FROM harvester.jobs WHERE state = 'pending') AS oldest_pending

-- name: finish_discovery_pass
UPDATE harvester.discovery
   SET watermark = GREATEST(watermark, $3),
       last_pass_at = now(),
       lease_owner = NULL,
       lease_expires_at = NULL,
       passes = passes + 1,
       pages = pages + $4,
       discovered = discovered + $5
 WHERE credential = $1 AND lease_owner = $2

-- name: make_listed_finished_jobs_due
-- Jobs the list shows as finished: due at once, ahead of every ordinary poll.
UPDATE harvester.jobs AS j
   SET next_poll_at = timestamptz '2000-01-01 00:00:00+00',
       upstream_status = t.status,
       job_type = COALESCE(t.job_type, j.job_type),
       updated_at = now()
  FROM unnest($1::uuid[], $2::text[], $3::text[]) AS t(job_id, status, job_type)
 WHERE j.job_id = t.job_id
   AND j.state = 'pending'
   AND (j.lease_expires_at IS NULL OR j.lease_expires_at < now())
RETURNING j.job_id

-- name: defer_listed_running_jobs
-- Jobs the list shows as still running: the list will announce their end, so no direct poll soon.
UPDATE harvester.jobs AS j
   SET next_poll_at = GREATEST(j.next_poll_at, now() + make_interval(secs => t.defer_s)),
       upstream_status = t.status,
       job_type = COALESCE(t.job_type, j.job_type),
       updated_at = now()
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::float8[]) AS t(job_id, status, job_type, defer_s)
 WHERE j.job_id = t.job_id
   AND j.state = 'pending'
   AND (j.lease_expires_at IS NULL OR j.lease_expires_at < now())

-- name: exists_job_for_discovery
-- Is there a pending job not yet known to be finished ($1: the terminal upstream statuses)? Only
-- then can a list page tell us anything.
SELECT EXISTS (SELECT 1 FROM harvester.jobs
                WHERE state = 'pending'
                  AND (upstream_status IS NULL
                       OR upstream_status <> ALL($1::text[])))
