-- Completion discovery: the shared watermark and what a list page tells about our pending jobs.

-- name: insert_discovery_row
INSERT INTO harvester.discovery (credential) VALUES ($1) ON CONFLICT DO NOTHING

-- name: claim_discovery_pass
-- Take the discovery lease if nobody holds it and a pass is due: the last one is at least $3
-- seconds old, or $5 while the credential's event stream is connected (the list then only
-- reconciles what the stream may have lost), or the stream asked for one after a (re)connect.
UPDATE harvester.discovery
   SET lease_owner = $2, lease_expires_at = now() + make_interval(secs => $4),
       reconcile_requested = false
 WHERE credential = $1
   AND (lease_expires_at IS NULL OR lease_expires_at < now() OR lease_owner = $2)
   AND (last_pass_at IS NULL
        OR reconcile_requested
        OR last_pass_at <= now() - make_interval(secs => CASE
               WHEN stream_connected_at IS NOT NULL AND stream_expires_at > now() THEN $5::float8
               ELSE $3::float8 END))
RETURNING watermark,
          (SELECT min(enqueued_at) FROM harvester.jobs WHERE state = 'pending' AND account = $6)
              AS oldest_pending

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
   AND j.account = $4
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
   AND j.account = $5
   AND j.state = 'pending'
   AND (j.lease_expires_at IS NULL OR j.lease_expires_at < now())
RETURNING j.job_id

-- name: select_discovery_state
-- Is there a pending job not yet known to be finished ($2: the terminal upstream statuses)? Only
-- then can a list page tell us anything. And is the credential's event stream connected (by any
-- process)?
SELECT EXISTS (SELECT 1 FROM harvester.jobs
                WHERE state = 'pending' AND account = $3
                  AND (upstream_status IS NULL OR upstream_status <> ALL($2::text[]))) AS needed,
       COALESCE((SELECT stream_connected_at IS NOT NULL AND stream_expires_at > now()
                   FROM harvester.discovery WHERE credential = $1), false) AS stream_up,
       (SELECT count(*) FROM (SELECT 1 FROM harvester.jobs
                               WHERE state = 'pending' AND account = $3
                                 AND (upstream_status = 'queued' OR polls >= 2)
                               LIMIT 100) AS w)::int AS waiting

-- name: claim_event_stream
-- The credential's stream lease: free, expired, or already ours. Renewing reports the connection
-- ($4: connected now) and the events seen since the last renewal ($5, $6 matched).
UPDATE harvester.discovery
   SET stream_owner = $2,
       stream_expires_at = now() + make_interval(secs => $3),
       stream_connected_at = CASE WHEN NOT $4 THEN NULL
                                  ELSE COALESCE(stream_connected_at, now()) END,
       stream_events = stream_events + $5,
       stream_matched = stream_matched + $6
 WHERE credential = $1
   AND (stream_owner IS NULL OR stream_expires_at < now() OR stream_owner = $2)
RETURNING true

-- name: request_reconcile_pass
-- After a (re)connect: events sent meanwhile are lost, so the next list pass covers the gap.
UPDATE harvester.discovery SET reconcile_requested = true WHERE credential = $1

-- name: release_event_stream
UPDATE harvester.discovery
   SET stream_owner = NULL, stream_expires_at = NULL, stream_connected_at = NULL
 WHERE credential = $1 AND stream_owner = $2

-- name: select_discovery_status
SELECT * FROM harvester.discovery_status ORDER BY account
