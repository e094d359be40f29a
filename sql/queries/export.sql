-- `harvester export VIEW`: one query per exportable name, streamed out with COPY (query) TO STDOUT.
-- Parameters, the same in every query (asyncpg inlines them as quoted literals for COPY, so each
-- one carries its cast):
--   $1 jsonb   the --tag filter as an object ('{}': no filter), matched with @> (jobs_tags_idx)
--   $2 bigint  --since: only jobs with a change numbered above it (NULL: everything)
-- No `$` may appear in these texts other than the parameters.

-- name: export_leads
SELECT v.*
  FROM harvester.leads v
 WHERE ($1::jsonb = '{}'::jsonb OR v.tags @> $1::jsonb)
   AND ($2::bigint IS NULL
        OR v.job_id IN (SELECT c.job_id FROM harvester.changes c WHERE c.change_id > $2::bigint))
 ORDER BY v.job_id

-- name: export_site_contacts
SELECT v.*
  FROM harvester.site_contacts v
 WHERE ($1::jsonb = '{}'::jsonb OR v.tags @> $1::jsonb)
   AND ($2::bigint IS NULL
        OR v.job_id IN (SELECT c.job_id FROM harvester.changes c WHERE c.change_id > $2::bigint))
 ORDER BY v.job_id

-- name: export_latest_sites
SELECT v.*
  FROM harvester.latest_sites v
 WHERE ($1::jsonb = '{}'::jsonb OR v.tags @> $1::jsonb)
   AND ($2::bigint IS NULL
        OR v.job_id IN (SELECT c.job_id FROM harvester.changes c WHERE c.change_id > $2::bigint))
 ORDER BY v.domain

-- name: export_team_members
SELECT t.*, j.tags
  FROM harvester.team_members t
  LEFT JOIN harvester.jobs j ON j.job_id = t.job_id
 WHERE ($1::jsonb = '{}'::jsonb OR j.tags @> $1::jsonb)
   AND ($2::bigint IS NULL
        OR t.job_id IN (SELECT c.job_id FROM harvester.changes c WHERE c.change_id > $2::bigint))
 ORDER BY t.job_id, t.position

-- name: export_businesses
-- A business belongs to every search that listed it: the tag filter keeps it when any of those
-- searches has the tags, --since when any of them changed; `tags` are its latest search's.
SELECT b.*, j.tags
  FROM harvester.businesses b
  LEFT JOIN harvester.jobs j ON j.job_id = b.last_job_id
 WHERE ($1::jsonb = '{}'::jsonb
        OR EXISTS (SELECT FROM harvester.maps_businesses m
                     JOIN harvester.jobs s ON s.job_id = m.job_id
                    WHERE m.place_id = b.place_id AND s.tags @> $1::jsonb))
   AND ($2::bigint IS NULL
        OR EXISTS (SELECT FROM harvester.maps_businesses m
                     JOIN harvester.changes c ON c.job_id = m.job_id
                    WHERE m.place_id = b.place_id AND c.change_id > $2::bigint))
 ORDER BY b.place_id

-- name: export_jobs
SELECT j.job_id, j.state, j.job_type, j.upstream_status, j.priority, j.tags, j.enqueued_at,
       j.last_polled_at, j.finished_at, j.polls, j.last_http_status, j.last_error
  FROM harvester.jobs j
 WHERE ($1::jsonb = '{}'::jsonb OR j.tags @> $1::jsonb)
   AND ($2::bigint IS NULL
        OR j.job_id IN (SELECT c.job_id FROM harvester.changes c WHERE c.change_id > $2::bigint))
 ORDER BY j.job_id

-- name: export_changes
SELECT c.change_id, c.job_id, c.state, c.job_type, c.account, c.reason, c.changed_at, j.tags
  FROM harvester.changes c
  LEFT JOIN harvester.jobs j ON j.job_id = c.job_id
 WHERE ($1::jsonb = '{}'::jsonb OR j.tags @> $1::jsonb)
   AND ($2::bigint IS NULL OR c.change_id > $2::bigint)
 ORDER BY c.change_id

-- name: export_as_json_lines
-- Wraps one of the export queries above (never user text; it replaces the placeholder in
-- braces): one JSON object per row.
SELECT row_to_json(x)::text FROM ({query}) AS x

-- name: set_export_time_zone
SET LOCAL TimeZone = 'UTC'
