-- The shared rate limiter: one row per API credential, used by every harvester process on this
-- database. A request slot is reserved in one statement under the row lock (harvester.rate_reserve);
-- the caller then sleeps until the slot's time before sending. Two readings of "N per window, burst
-- B" are enforced at once: a GCRA (token bucket) and a rolling-window cap over the recorded grants.

CREATE TABLE harvester.rate_limits (
    credential    text PRIMARY KEY,                    -- sha256 hex of the API token, never the token
    tat           timestamptz,                         -- GCRA theoretical arrival time
    grants        timestamptz[] NOT NULL DEFAULT '{}', -- the last n_limit grant times, ascending
    paused_until  timestamptz,
    pause_reason  text,
    granted_total bigint NOT NULL DEFAULT 0,
    pauses_total  bigint NOT NULL DEFAULT 0,
    -- the parameters of the last reservation, so `harvester status` can describe the state
    n_limit       integer,
    window_s      double precision,
    interval_s    double precision,
    burst         integer,
    margin        double precision,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One step of the limiter, pure: the earliest grant time >= p_earliest that respects the pause,
-- the GCRA (emission interval p_interval, burst p_burst), the rolling cap (at most p_limit grants in
-- any p_window) and the order of earlier grants; and the state after granting it. Window and interval
-- arrive with the safety margin already applied.
CREATE FUNCTION harvester.rate_step(
    p_tat timestamptz, p_grants timestamptz[], p_paused_until timestamptz, p_earliest timestamptz,
    p_limit integer, p_window double precision, p_interval double precision, p_burst integer,
    OUT granted_at timestamptz, OUT new_tat timestamptz, OUT new_grants timestamptz[]
) LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    n integer := coalesce(array_length(p_grants, 1), 0);
    t timestamptz := p_earliest;
BEGIN
    IF p_paused_until IS NOT NULL AND p_paused_until > t THEN
        t := p_paused_until;
    END IF;
    IF p_tat IS NOT NULL THEN
        t := greatest(t, p_tat - make_interval(secs => (least(p_burst, p_limit) - 1) * p_interval));
    END IF;
    IF n > 0 THEN
        t := greatest(t, p_grants[n]);  -- grants stay ordered, so the window check is one lookup
    END IF;
    IF n >= p_limit THEN
        t := greatest(t, p_grants[n - p_limit + 1] + make_interval(secs => p_window));
    END IF;
    granted_at := t;
    new_tat := greatest(coalesce(p_tat, t), t) + make_interval(secs => p_interval);
    new_grants := (p_grants || t)[greatest(1, n + 2 - p_limit):n + 1];
END
$$;

-- Reserve one request slot for a credential; returns the slot's time and the database's now.
CREATE FUNCTION harvester.rate_reserve(
    p_key text, p_limit integer, p_window double precision, p_interval double precision,
    p_burst integer, p_margin double precision
) RETURNS TABLE (granted_at timestamptz, db_now timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    now_ts timestamptz;
    r harvester.rate_limits%ROWTYPE;
    s record;
BEGIN
    INSERT INTO harvester.rate_limits (credential) VALUES (p_key) ON CONFLICT DO NOTHING;
    SELECT * INTO r FROM harvester.rate_limits WHERE credential = p_key FOR UPDATE;
    now_ts := clock_timestamp();  -- read under the lock: reservations are ordered like the clock
    s := harvester.rate_step(r.tat, r.grants, r.paused_until, now_ts, p_limit,
                             p_window * (1 + p_margin), p_interval * (1 + p_margin), p_burst);
    UPDATE harvester.rate_limits
       SET tat = s.new_tat, grants = s.new_grants, granted_total = granted_total + 1,
           n_limit = p_limit, window_s = p_window, interval_s = p_interval, burst = p_burst,
           margin = p_margin, updated_at = now_ts
     WHERE credential = p_key;
    granted_at := s.granted_at;
    db_now := now_ts;
    RETURN NEXT;
END
$$;

-- How many slots could be granted from now up to now + p_horizon (at most p_max), without
-- reserving any; the first such slot; and the grants inside the current rolling window.
CREATE FUNCTION harvester.rate_peek(
    p_key text, p_limit integer, p_window double precision, p_interval double precision,
    p_burst integer, p_margin double precision, p_horizon double precision, p_max integer
) RETURNS TABLE (db_now timestamptz, next_at timestamptz, available integer, in_window integer,
                 paused_until timestamptz, pause_reason text, granted_total bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    r harvester.rate_limits%ROWTYPE;
    s record;
    v_tat timestamptz;
    v_grants timestamptz[];
    until_ts timestamptz;
BEGIN
    db_now := clock_timestamp();
    SELECT * INTO r FROM harvester.rate_limits WHERE credential = p_key;
    v_tat := r.tat;
    v_grants := coalesce(r.grants, '{}');
    until_ts := db_now + make_interval(secs => greatest(p_horizon, 0));
    available := 0;
    LOOP
        s := harvester.rate_step(v_tat, v_grants, r.paused_until, db_now, p_limit,
                                 p_window * (1 + p_margin), p_interval * (1 + p_margin), p_burst);
        IF next_at IS NULL THEN
            next_at := s.granted_at;
        END IF;
        EXIT WHEN s.granted_at > until_ts OR available >= p_max;
        available := available + 1;
        v_tat := s.new_tat;
        v_grants := s.new_grants;
    END LOOP;
    SELECT count(*)::integer INTO in_window FROM unnest(coalesce(r.grants, '{}')) AS g
     WHERE g > db_now - make_interval(secs => p_window * (1 + p_margin));
    paused_until := r.paused_until;
    pause_reason := r.pause_reason;
    granted_total := coalesce(r.granted_total, 0);
    RETURN NEXT;
END
$$;
