-- A reader-safe view of the shared limiter, for `harvester status` run by roles that may not read
-- harvester.rate_limits (the reader of sql/roles.sql): a short prefix of the credential's
-- fingerprint (the table holds a sha256 of the token, never the token), the limits of the last
-- reservation, the pause, and what a peek would grant now. No grant times, no GCRA state.

-- rate_peek's arithmetic over given state instead of a table row, so that the view can call it
-- with the privileges of whoever reads the view: it reads no table.
CREATE FUNCTION harvester.rate_peek_state(
    p_tat timestamptz, p_grants timestamptz[], p_paused_until timestamptz, p_now timestamptz,
    p_limit integer, p_window double precision, p_interval double precision, p_burst integer,
    p_margin double precision, p_horizon double precision, p_max integer,
    OUT next_at timestamptz, OUT available integer, OUT in_window integer
) LANGUAGE plpgsql STABLE AS $$
DECLARE
    s record;
    v_tat timestamptz := p_tat;
    v_grants timestamptz[] := coalesce(p_grants, '{}');
    until_ts timestamptz := p_now + make_interval(secs => greatest(p_horizon, 0));
BEGIN
    available := 0;
    LOOP
        s := harvester.rate_step(v_tat, v_grants, p_paused_until, p_now, p_limit,
                                 p_window * (1 + p_margin), p_interval * (1 + p_margin), p_burst);
        IF next_at IS NULL THEN
            next_at := s.granted_at;
        END IF;
        EXIT WHEN s.granted_at > until_ts OR available >= p_max;
        available := available + 1;
        v_tat := s.new_tat;
        v_grants := s.new_grants;
    END LOOP;
    SELECT count(*)::integer INTO in_window FROM unnest(coalesce(p_grants, '{}')) AS g
     WHERE g > p_now - make_interval(secs => p_window * (1 + p_margin));
END
$$;

-- Same signature and answers as in 002; the arithmetic now lives in rate_peek_state.
CREATE OR REPLACE FUNCTION harvester.rate_peek(
    p_key text, p_limit integer, p_window double precision, p_interval double precision,
    p_burst integer, p_margin double precision, p_horizon double precision, p_max integer
) RETURNS TABLE (db_now timestamptz, next_at timestamptz, available integer, in_window integer,
                 paused_until timestamptz, pause_reason text, granted_total bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r harvester.rate_limits%ROWTYPE;
    s record;
BEGIN
    db_now := clock_timestamp();
    SELECT * INTO r FROM harvester.rate_limits WHERE credential = p_key;
    s := harvester.rate_peek_state(r.tat, r.grants, r.paused_until, db_now, p_limit, p_window,
                                   p_interval, p_burst, p_margin, p_horizon, p_max);
    next_at := s.next_at;
    available := s.available;
    in_window := s.in_window;
    paused_until := r.paused_until;
    pause_reason := r.pause_reason;
    granted_total := coalesce(r.granted_total, 0);
    RETURN NEXT;
END
$$;

CREATE VIEW harvester.limiter_status AS
SELECT left(l.credential, 12) AS credential,
       l.n_limit, l.window_s, l.interval_s, l.burst, l.margin,
       l.paused_until, l.pause_reason, l.granted_total, l.pauses_total, l.updated_at,
       c.db_now, p.next_at, p.available, p.in_window
  FROM harvester.rate_limits AS l,
       LATERAL (SELECT clock_timestamp() AS db_now) AS c,
       LATERAL harvester.rate_peek_state(l.tat, l.grants, l.paused_until, c.db_now,
                                         coalesce(l.n_limit, 1), coalesce(l.window_s, 60),
                                         coalesce(l.interval_s, 0.6), coalesce(l.burst, 1),
                                         coalesce(l.margin, 0), 0, coalesce(l.n_limit, 1)) AS p;
