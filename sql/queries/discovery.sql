-- Completion discovery: the shared watermark and what a list page tells about our pending jobs.

-- name: insert_discovery_row
INSERT INTO harvester.discovery (credential) VALUES ($1) ON CONFLICT DO NOTHING

-- name: claim_discovery_pass
-- Take the discovery lease if nobody holds it and a pass is due: the last one is at least $3
-- seconds old, or $5 while the credential's event stream is connected (the list then only
-- reconciles what the stream may have lost), or the stream asked for one after a (re)connect.
-- gap_since: a pass the stream asked for while no full pass is due covers only the gap, back to
-- the last event its previous connection received (or the watermark, if newer); NULL: a full pass.
WITH due AS (
    SELECT credential, reconcile_requested, reconcile_since,
           (last_pass_at IS NULL
            OR last_pass_at <= now() - make_interval(secs => CASE
                   WHEN stream_connected_at IS NOT NULL AND stream_expires_at > now() THEN $5::float8
                   ELSE $3::float8 END)) AS full_due
      FROM harvester.discovery
     WHERE credential = $1
       FOR UPDATE
)
UPDATE harvester.discovery AS d
   SET lease_owner = $2, lease_expires_at = now() + make_interval(secs => $4),
       reconcile_requested = false, reconcile_since = NULL
  FROM due
 WHERE d.credential = due.credential
   AND (d.lease_expires_at IS NULL OR d.lease_expires_at < now() OR d.lease_owner = $2)
   AND (due.full_due OR due.reconcile_requested)
RETURNING d.watermark,
          (SELECT min(enqueued_at) FROM harvester.jobs WHERE state = 'pending' AND account = $6)
              AS oldest_pending,
          CASE WHEN due.full_due OR due.reconcile_since IS NULL THEN NULL
               ELSE GREATEST(due.reconcile_since, d.watermark) END AS gap_since

-- name: renew_discovery_lease
-- A pass still reading pages keeps its lease (a queue scan may read 200 pages, minutes at the
-- limit): nobody else starts a pass meanwhile. No row: the lease was taken over, stop reading.
UPDATE harvester.discovery
   SET lease_expires_at = now() + make_interval(secs => $3)
 WHERE credential = $1 AND lease_owner = $2
RETURNING true

-- name: finish_discovery_pass
-- $6: a full pass (moves the watermark and the time of the last pass); a gap pass only adds its
-- pages, so the next full pass still reads back to where the last full one stopped.
UPDATE harvester.discovery
   SET watermark = CASE WHEN $6 THEN GREATEST(watermark, $3) ELSE watermark END,
       last_pass_at = CASE WHEN $6 THEN now() ELSE last_pass_at END,
       lease_owner = NULL,
       lease_expires_at = NULL,
       passes = passes + 1,
       pages = pages + $4,
       discovered = discovered + $5
 WHERE credential = $1 AND lease_owner = $2

-- name: make_listed_finished_jobs_due
-- Jobs the list shows as finished: due at once, ahead of every ordinary poll. A job under lease
-- keeps its due time (the lease's end: it must not be claimed twice) and is marked: a poll in
-- flight writes its own answer after this, and a hold makes the job due at once.
UPDATE harvester.jobs AS j
   SET next_poll_at = CASE WHEN j.lease_expires_at > now() THEN j.next_poll_at
                           ELSE timestamptz '2000-01-01 00:00:00+00' END,
       upstream_status = t.status,
       job_type = COALESCE(t.job_type, j.job_type),
       updated_at = now()
  FROM unnest($1::uuid[], $2::text[], $3::text[]) AS t(job_id, status, job_type)
 WHERE j.job_id = t.job_id
   AND j.account = $4
   AND j.state = 'pending'
RETURNING j.job_id

-- name: defer_listed_running_jobs
-- Jobs the list (or the stream) shows as still running: their end will be announced, so no direct
-- poll soon. The first news of a job (nothing known, never polled: its due time is at most a
-- first-poll hold), and a job that was waiting queued and has now started, get the defer given
-- (a started job's end is due sooner than a queued one's, or an unseen one's). $6: a job already
-- known started keeps its due time (with the stream up that is when its end is overdue, counted
-- from its start; a page showing it running again must not push that back). A job known ended
-- ($7, the upstream ends) is left as it is: a late start or a page read before the end does not
-- undo it. A job under lease is deferred too, never to before its lease ends (it must not be
-- claimed twice): a poll in flight writes its own answer after this, and the hold of a job
-- claimed too early keeps the defer.
UPDATE harvester.jobs AS j
   SET next_poll_at = CASE WHEN j.upstream_status = ANY($7::text[]) THEN j.next_poll_at ELSE GREATEST(
           CASE WHEN (j.upstream_status = 'queued' OR (j.upstream_status IS NULL AND j.polls = 0))
                     AND t.status IS DISTINCT FROM 'queued'
                    THEN now() + make_interval(secs => t.defer_s)
                WHEN $6 AND j.upstream_status <> 'queued' AND t.status IS DISTINCT FROM 'queued'
                    THEN j.next_poll_at
                ELSE GREATEST(j.next_poll_at, now() + make_interval(secs => t.defer_s)) END,
           CASE WHEN j.lease_expires_at > now() THEN j.lease_expires_at END) END,
       upstream_status = CASE WHEN j.upstream_status = ANY($7::text[]) THEN j.upstream_status
                              ELSE t.status END,
       job_type = COALESCE(t.job_type, j.job_type),
       updated_at = now()
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::float8[]) AS t(job_id, status, job_type, defer_s)
 WHERE j.job_id = t.job_id
   AND j.account = $5
   AND j.state = 'pending'
RETURNING j.job_id

-- name: pull_in_passed_queued_jobs
-- Jobs still known queued that SpiderIQ's queue went past (a job of their type queued later has
-- started): cancelled while they waited, or started with the event lost. Their next poll comes
-- forward to $2 seconds from now; a job already due sooner, or known to have moved on, is left.
UPDATE harvester.jobs AS j
   SET next_poll_at = now() + make_interval(secs => t.defer_s),
       updated_at = now()
  FROM unnest($1::uuid[], $2::float8[]) AS t(job_id, defer_s)
 WHERE j.job_id = t.job_id
   AND j.account = $3
   AND j.state = 'pending'
   AND j.upstream_status = 'queued'
   AND j.next_poll_at > now() + make_interval(secs => t.defer_s)
   AND (j.lease_expires_at IS NULL OR j.lease_expires_at < now())
RETURNING j.job_id

-- name: adopt_jobs
-- Jobs an account's list or stream showed that no producer enqueued (adopt mode): queued for
-- that account, tagged, due at once, at priority $5 (a backfill's jobs below the live ones). Known
-- ids (any account) are left alone; returns the new ones. Only an end (one of $6) is noted as
-- their upstream status: what showed a job queued or running defers it right after (as for any
-- job of ours), and a job claimed before that is held as one nobody has mentioned, not polled
-- while it runs.
INSERT INTO harvester.jobs (job_id, account, adopted, tags, job_type, upstream_status, priority)
SELECT id, $2::text, true, '{"adopted": true}'::jsonb, jt,
       CASE WHEN st = ANY($6::text[]) THEN st END, $5::smallint
  FROM unnest($1::uuid[], $3::text[], $4::text[]) AS t(id, jt, st)
ON CONFLICT DO NOTHING
RETURNING job_id

-- name: count_queued_defers_ending
-- Pending jobs known queued whose deferred poll comes within $1 seconds (not the ones already due:
-- a backlog due now is the worker's). Counted up to 100: enough to say a queued scan pays.
SELECT count(*)::int AS expiring
  FROM (SELECT 1 FROM harvester.jobs
         WHERE state = 'pending' AND account = $2 AND upstream_status = 'queued'
           AND next_poll_at > now() AND next_poll_at <= now() + make_interval(secs => $1)
         LIMIT 100) AS e

-- name: spread_queued_defers
-- Neither the stream nor the list can announce starts any more: the long defers of the jobs known
-- queued are cut, their polls spread over the next $1 seconds (a backlog must not all fall due at
-- once).
UPDATE harvester.jobs
   SET next_poll_at = now() + make_interval(secs => $1 * random()),
       updated_at = now()
 WHERE state = 'pending' AND account = $2 AND upstream_status = 'queued'
   AND next_poll_at > now() + make_interval(secs => $1)
   AND (lease_expires_at IS NULL OR lease_expires_at < now())
RETURNING job_id

-- name: select_discovery_state
-- How many pending jobs are not yet known to be finished ($2: the terminal upstream statuses; counted
-- up to 100)? Only then can a list page tell us anything, and the more the fewer pages it takes. And is the credential's event stream connected (by any
-- process)? youngest_s: how long the newest of those jobs has waited (the pages' latency allowance).
SELECT (SELECT count(*) FROM (SELECT 1 FROM harvester.jobs
                               WHERE state = 'pending' AND account = $3
                                 AND (upstream_status IS NULL OR upstream_status <> ALL($2::text[]))
                               LIMIT 100) AS u)::int AS unfinished,
       COALESCE((SELECT stream_connected_at IS NOT NULL AND stream_expires_at > now()
                   FROM harvester.discovery WHERE credential = $1), false) AS stream_up,
       (SELECT count(*) FROM (SELECT 1 FROM harvester.jobs
                               WHERE state = 'pending' AND account = $3
                                 AND (upstream_status = 'queued' OR polls >= 2)
                               LIMIT 100) AS w)::int AS waiting,
       COALESCE((SELECT reconcile_requested OR last_pass_at IS NULL
                   FROM harvester.discovery WHERE credential = $1), false) AS reconcile_pending,
       (SELECT extract(epoch FROM now() - enqueued_at)::float8 FROM harvester.jobs
         WHERE state = 'pending' AND account = $3
           AND (upstream_status IS NULL OR upstream_status <> ALL($2::text[]))
         ORDER BY enqueued_at DESC LIMIT 1) AS youngest_s

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

-- name: note_nothing_to_reconcile
-- Nothing pending while the stream is connected: a pass now would have nothing to tell, so the
-- stream's request is met and this is the time of the last full pass (the next is due
-- list_reconcile_s later; jobs enqueued from now on are the stream's to announce).
UPDATE harvester.discovery
   SET reconcile_requested = false, reconcile_since = NULL, last_pass_at = now()
 WHERE credential = $1
   AND (lease_expires_at IS NULL OR lease_expires_at < now())
   AND (reconcile_requested OR last_pass_at IS NULL)
   AND NOT EXISTS (SELECT 1 FROM harvester.jobs WHERE state = 'pending' AND account = $2)

-- name: request_reconcile_pass
-- After a (re)connect: events sent meanwhile are lost, so the next list pass covers the gap, from
-- $2 (API time; NULL: nothing says where it began, so a full pass). Requests add up: the earliest
-- start wins, and a full one stays full.
UPDATE harvester.discovery
   SET reconcile_since = CASE
           WHEN $2::timestamptz IS NULL OR (reconcile_requested AND reconcile_since IS NULL) THEN NULL
           WHEN reconcile_requested THEN LEAST(reconcile_since, $2::timestamptz)
           ELSE $2::timestamptz END,
       reconcile_requested = true
 WHERE credential = $1

-- name: release_event_stream
UPDATE harvester.discovery
   SET stream_owner = NULL, stream_expires_at = NULL, stream_connected_at = NULL
 WHERE credential = $1 AND stream_owner = $2

-- name: select_discovery_status
SELECT * FROM harvester.discovery_status ORDER BY account
