-- The shared rate limiter (see sql/migrations/002_limiter.sql for the functions).

-- name: reserve_slot
SELECT granted_at, db_now FROM harvester.rate_reserve($1, $2, $3, $4, $5, $6)

-- name: peek_limiter
SELECT * FROM harvester.rate_peek($1, $2, $3, $4, $5, $6, $7, $8)

-- name: pause_limiter
INSERT INTO harvester.rate_limits AS l (credential, paused_until, pause_reason, pauses_total)
VALUES ($1, clock_timestamp() + make_interval(secs => $2), $3, 1)
ON CONFLICT (credential) DO UPDATE
   SET paused_until = greatest(l.paused_until, EXCLUDED.paused_until),
       pause_reason = CASE WHEN l.paused_until IS NULL OR EXCLUDED.paused_until > l.paused_until
                           THEN EXCLUDED.pause_reason ELSE l.pause_reason END,
       pauses_total = l.pauses_total + 1,
       updated_at = clock_timestamp()
RETURNING extract(epoch FROM l.paused_until - clock_timestamp())::float8 AS remaining_s

-- name: select_paused_until
SELECT paused_until
  FROM harvester.rate_limits
 WHERE credential = $1

-- name: describe_limiters
-- Through the reader-safe view, so that `harvester status` works for the reader role too.
SELECT account, credential, n_limit, window_s, interval_s, burst, margin, db_now, next_at, available,
       in_window, paused_until, pause_reason, granted_total
  FROM harvester.limiter_status
 ORDER BY account
