-- What `harvester show` and `harvester status --watch` read: plain SELECTs the reader role may run.

-- name: select_job_detail
SELECT j.job_id, j.state, j.job_type, j.upstream_status, j.priority, j.tags::text AS tags,
       j.enqueued_at, j.next_poll_at, j.last_polled_at, j.finished_at, j.updated_at,
       j.polls, j.last_http_status, j.last_error, j.not_found_count, j.fault_count,
       j.lease_owner, j.lease_expires_at, now() AS db_now,
       r.completed_at, r.fetched_at, r.processing_time_seconds, r.status AS result_status,
       (SELECT count(*) FROM harvester.site_emails x WHERE x.job_id = j.job_id)::bigint AS emails,
       (SELECT count(*) FROM harvester.site_phones x WHERE x.job_id = j.job_id)::bigint AS phones,
       (SELECT count(*) FROM harvester.site_socials x WHERE x.job_id = j.job_id)::bigint AS socials,
       (SELECT count(*) FROM harvester.team_members x WHERE x.job_id = j.job_id)::bigint AS team_members,
       (SELECT count(*) FROM harvester.maps_businesses x WHERE x.job_id = j.job_id)::bigint AS businesses,
       (SELECT count(*) FROM harvester.site_addresses x WHERE x.job_id = j.job_id)::bigint AS addresses,
       (SELECT count(*) FROM harvester.rejects x WHERE x.job_id = j.job_id)::bigint AS rejects,
       (SELECT max(c.change_id) FROM harvester.changes c WHERE c.job_id = j.job_id) AS last_change
  FROM harvester.jobs j
  LEFT JOIN harvester.results r ON r.job_id = j.job_id
 WHERE j.job_id = $1

-- name: select_finished_since
-- Jobs that finished (first reached a final state) in the last $1 seconds, harvested among them:
-- the rates of `status --watch`, read off the change feed. span_s is the part of the window the
-- feed covers: a harvest that began 20 s ago has a rate per 20 s, not per minute.
SELECT count(*) FILTER (WHERE state = 'harvested')::bigint AS harvested,
       count(*)::bigint AS finished,
       least($1::float8, extract(epoch FROM clock_timestamp()
                                 - (SELECT min(changed_at) FROM harvester.changes)))::float8 AS span_s
  FROM harvester.changes
 WHERE reason = 'finished' AND changed_at > clock_timestamp() - make_interval(secs => $1)

-- name: select_oldest_pending_job
SELECT job_id, extract(epoch FROM now() - enqueued_at)::float8 AS age_s
  FROM harvester.jobs
 WHERE state = 'pending'
 ORDER BY enqueued_at
 LIMIT 1

-- name: count_jobs_by_tag
-- Progress per value of one tag ($1); jobs without it are grouped under NULL.
SELECT tags ->> $1 AS value, state, count(*)::bigint AS jobs
  FROM harvester.jobs
 GROUP BY 1, 2
