-- The change feed (011_changes): what consumers, `show`, `export --since` and `status` read.
-- Every statement here is a plain SELECT the reader role may run.

-- name: select_changes_after
-- The consumer pattern: everything after the last number seen, in order, a page at a time.
SELECT change_id, job_id, state, job_type, account, reason, changed_at
  FROM harvester.changes
 WHERE change_id > $1
 ORDER BY change_id
 LIMIT $2

-- name: select_last_change
SELECT COALESCE(max(change_id), 0)::bigint FROM harvester.changes

-- name: select_last_change_before
-- The last change number committed before a time: `--since TIME` as a change number.
SELECT COALESCE(max(change_id), 0)::bigint FROM harvester.changes WHERE changed_at <= $1

-- name: select_change_jumps
-- The declared gaps: each failover's first number (014).
SELECT timeline, first_change, last_before, jumped_at FROM harvester.change_jumps ORDER BY first_change
