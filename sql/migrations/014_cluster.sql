-- Surviving a failover: nothing the daemon needs in an unlogged relation, change numbers that never
-- repeat for a different change, a limiter that cannot burst on lost grants, and a change feed that
-- costs only what changes.
--
-- Staging. 011 kept the feed's per-transaction staging in UNLOGGED tables. An unlogged sequence that
-- a standby created by replaying WAL is unreadable once that standby is promoted ("bad magic number
-- in sequence"), so every store failed on a promoted node. The staging tables are dropped (which
-- works on such a node: nothing is read) and made again as ordinary tables, whose rows live only
-- inside one transaction anyway.
--
-- Timelines. A promotion starts a new WAL timeline, visible at once in the name of the current WAL
-- file. With asynchronous replication the old primary's last commits may be lost, and with them
-- the change numbers and limiter grants they took. The counter row and each limiter row remember the
-- timeline they were last written on; the first write on a new timeline jumps the change numbers
-- past anything the old timeline can have handed out, declaring the jump in harvester.change_jumps,
-- and fills the limiter's window as if the old primary had granted all it could since its last
-- replicated grant.

-- ---------------------------------------------------------------- the timeline
CREATE FUNCTION harvester.current_timeline() RETURNS integer
LANGUAGE sql VOLATILE AS $$
    SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::integer
$$;

-- ---------------------------------------------------------------- staging, logged
DROP TABLE harvester.change_staging;
DROP TABLE harvester.change_transactions CASCADE;  -- its deferred trigger goes with it
DROP TRIGGER jobs_finished ON harvester.jobs;
DROP TRIGGER results_restored ON harvester.results;
DROP FUNCTION harvester.stage_finished_jobs();
DROP FUNCTION harvester.stage_restored_results();

CREATE TABLE harvester.change_staging (
    xid    xid8 NOT NULL DEFAULT pg_current_xact_id(),
    staged bigint GENERATED ALWAYS AS IDENTITY,
    job_id uuid NOT NULL,
    reason text NOT NULL
);
CREATE INDEX change_staging_xid_idx ON harvester.change_staging (xid);

CREATE TABLE harvester.change_transactions (
    xid xid8 PRIMARY KEY
);

-- Which rows changed: row triggers that name their columns and say in WHEN what a change is, so
-- that claims, lease renewals and reschedules (which set neither column) fire nothing, and a row
-- whose state stays the same costs a comparison, not a call. The staging INSERT is one index entry
-- per changed row, for one row and for a million alike: no join, no plan to go stale.
CREATE FUNCTION harvester.stage_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO harvester.change_staging (job_id, reason) VALUES (NEW.job_id, TG_ARGV[0]);
    RETURN NULL;
END;
$$;

-- Which transactions to number: once per statement that may have staged rows.
CREATE FUNCTION harvester.note_change_transaction() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO harvester.change_transactions VALUES (pg_current_xact_id()) ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_finished
    AFTER UPDATE OF state ON harvester.jobs
    FOR EACH ROW
    WHEN (NEW.state <> 'pending' AND NEW.state IS DISTINCT FROM OLD.state)
    EXECUTE FUNCTION harvester.stage_change('finished');

CREATE TRIGGER jobs_finished_noted
    AFTER UPDATE OF state ON harvester.jobs
    FOR EACH STATEMENT
    EXECUTE FUNCTION harvester.note_change_transaction();

CREATE TRIGGER results_restored
    AFTER UPDATE OF raw, rows_digest ON harvester.results
    FOR EACH ROW
    WHEN (NEW.raw IS DISTINCT FROM OLD.raw OR NEW.rows_digest IS DISTINCT FROM OLD.rows_digest)
    EXECUTE FUNCTION harvester.stage_change('restored');

CREATE TRIGGER results_restored_noted
    AFTER UPDATE OF raw, rows_digest ON harvester.results
    FOR EACH STATEMENT
    EXECUTE FUNCTION harvester.note_change_transaction();

-- ---------------------------------------------------------------- declared jumps
CREATE TABLE harvester.change_jumps (
    timeline     integer PRIMARY KEY,  -- the WAL timeline the numbers after the jump were taken on
    first_change bigint NOT NULL,      -- the first number that timeline can hand out
    last_before  bigint NOT NULL,      -- the last number this database had before the jump
    jumped_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The numbers of timeline t start at t * 2^40: past anything an earlier timeline handed out
-- unless it numbered over a trillion changes.
ALTER TABLE harvester.change_counter ADD COLUMN timeline integer;
-- A database that has never been numbered, or has never been promoted, is on the timeline its
-- numbers were taken on; otherwise that is unknown, and the first change jumps.
UPDATE harvester.change_counter
   SET timeline = CASE WHEN last_change = 0 OR harvester.current_timeline() = 1
                       THEN harvester.current_timeline() END;

CREATE OR REPLACE FUNCTION harvester.number_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    first bigint;
    counted_on integer;
    now_on integer := harvester.current_timeline();
    added bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM harvester.change_staging WHERE xid = NEW.xid) THEN
        DELETE FROM harvester.change_transactions WHERE xid = NEW.xid;  -- a statement changed nothing
        RETURN NULL;
    END IF;
    SELECT last_change, timeline INTO first, counted_on FROM harvester.change_counter FOR UPDATE;
    IF counted_on IS DISTINCT FROM now_on THEN
        INSERT INTO harvester.change_jumps (timeline, first_change, last_before)
        VALUES (now_on, greatest(first + 1, now_on::bigint << 40), first)
        ON CONFLICT (timeline) DO NOTHING;
        UPDATE harvester.change_counter
           SET last_change = greatest(first, (now_on::bigint << 40) - 1), timeline = now_on
        RETURNING last_change INTO first;
    END IF;
    INSERT INTO harvester.changes (change_id, job_id, state, job_type, account, reason)
    SELECT first + row_number() OVER (ORDER BY s.staged), j.job_id, j.state, j.job_type, j.account,
           s.reason
      FROM (SELECT job_id, min(staged) AS staged,
                   CASE WHEN bool_or(reason = 'finished') THEN 'finished' ELSE 'restored' END AS reason
              FROM harvester.change_staging
             WHERE xid = NEW.xid
             GROUP BY job_id) AS s
      JOIN harvester.jobs j ON j.job_id = s.job_id
     WHERE j.state <> 'pending';
    GET DIAGNOSTICS added = ROW_COUNT;
    IF added > 0 THEN
        UPDATE harvester.change_counter SET last_change = first + added;
        PERFORM pg_notify('harvester_changes', json_build_object(
                    'change', c.change_id,
                    'job_id', c.job_id,
                    'state', c.state,
                    'job_type', c.job_type,
                    'account', c.account
                )::text)
           FROM (SELECT * FROM harvester.changes
                  WHERE change_id > first AND change_id <= first + added
                  ORDER BY change_id) AS c;
    END IF;
    DELETE FROM harvester.change_staging WHERE xid = NEW.xid;
    DELETE FROM harvester.change_transactions WHERE xid = NEW.xid;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER changes_numbered
    AFTER INSERT ON harvester.change_transactions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    EXECUTE FUNCTION harvester.number_changes();

-- ---------------------------------------------------------------- the limiter across a promotion
ALTER TABLE harvester.rate_limits ADD COLUMN timeline integer;
UPDATE harvester.rate_limits SET timeline = harvester.current_timeline();

-- The grants the old primary may have made after its last replicated one (at p_since) and before
-- now, as if it had granted every slot it could: appended to the known ones, they keep the new
-- primary from granting a burst over the limit. At most a window of them matters.
CREATE FUNCTION harvester.rate_fill(
    p_tat timestamptz, p_grants timestamptz[], p_since timestamptz, p_now timestamptz,
    p_limit integer, p_window double precision, p_interval double precision, p_burst integer,
    OUT new_tat timestamptz, OUT new_grants timestamptz[]
) LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    s record;
    t timestamptz := greatest(coalesce(p_since, p_now), p_now - make_interval(secs => p_window));
BEGIN
    new_tat := p_tat;
    new_grants := coalesce(p_grants, '{}');
    FOR i IN 1 .. p_limit + p_burst LOOP
        s := harvester.rate_step(new_tat, new_grants, NULL, t, p_limit, p_window, p_interval, p_burst);
        EXIT WHEN s.granted_at > p_now;
        new_tat := s.new_tat;
        new_grants := s.new_grants;
        t := s.granted_at;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION harvester.rate_reserve(
    p_key text, p_limit integer, p_window double precision, p_interval double precision,
    p_burst integer, p_margin double precision
) RETURNS TABLE (granted_at timestamptz, db_now timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    now_ts timestamptz;
    now_on integer := harvester.current_timeline();
    r harvester.rate_limits%ROWTYPE;
    f record;
    s record;
BEGIN
    INSERT INTO harvester.rate_limits (credential, timeline) VALUES (p_key, now_on) ON CONFLICT DO NOTHING;
    SELECT * INTO r FROM harvester.rate_limits WHERE credential = p_key FOR UPDATE;
    now_ts := clock_timestamp();  -- read under the lock: reservations are ordered like the clock
    IF r.timeline <> now_on THEN  -- NULL: a row only a pause has written so far
        f := harvester.rate_fill(r.tat, r.grants, r.updated_at, now_ts, p_limit,
                                 p_window * (1 + p_margin), p_interval * (1 + p_margin), p_burst);
        r.tat := f.new_tat;
        r.grants := f.new_grants;
    END IF;
    s := harvester.rate_step(r.tat, r.grants, r.paused_until, now_ts, p_limit,
                             p_window * (1 + p_margin), p_interval * (1 + p_margin), p_burst);
    UPDATE harvester.rate_limits
       SET tat = s.new_tat, grants = s.new_grants, granted_total = granted_total + 1,
           n_limit = p_limit, window_s = p_window, interval_s = p_interval, burst = p_burst,
           margin = p_margin, updated_at = now_ts, timeline = now_on
     WHERE credential = p_key;
    granted_at := s.granted_at;
    db_now := now_ts;
    RETURN NEXT;
END
$$;
