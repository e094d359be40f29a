-- Storing many bodies without a lease: what reprocess reads back.

-- name: select_raw_results
-- Reprocess: stored bodies of harvested jobs, all (NULL ids) or the given ones, in keyset pages.
SELECT r.job_id, r.raw::text AS raw
  FROM harvester.results r
  JOIN harvester.jobs j USING (job_id)
 WHERE j.state = 'harvested'
   AND ($1::uuid[] IS NULL OR r.job_id = ANY($1::uuid[]))
   AND ($2::uuid IS NULL OR r.job_id > $2::uuid)
 ORDER BY r.job_id
 LIMIT $3
