-- Storing a result body: a body that cannot be stored is kept byte for byte (its results and
-- normalized rows are rows.sql's, the job's final state jobs.sql's finish_job).

-- name: insert_reject
INSERT INTO harvester.rejects (job_id, reason, body) VALUES ($1, $2, $3)
