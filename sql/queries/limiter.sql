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
SELECT l.credential, l.n_limit, l.window_s, l.interval_s, l.burst, l.margin, p.*
  FROM harvester.rate_limits AS l,
       LATERAL harvester.rate_peek(l.credential, coalesce(l.n_limit, 1), coalesce(l.window_s, 60),
                                   coalesce(l.interval_s, 0.6), coalesce(l.burst, 1),
                                   coalesce(l.margin, 0), 0, coalesce(l.n_limit, 1)) AS p
 ORDER BY l.credential
