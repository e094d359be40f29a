-- The change feed: one row in harvester.changes per change that finishes a job or alters its stored
-- rows, numbered 1, 2, 3, ... in commit order; NOTIFY harvester_changes with a small JSON payload in
-- the same transaction; the jobs' tags in the output views, with an index for `tags @> '{...}'`.
--
-- Why a table and a counter row, not a sequence: sequence values are handed out when a transaction
-- asks, not when it commits, so a consumer reading `change_id > last` can see 8 committed while 7
-- is still in flight, move its cursor to 8, and never read 7. Here the number is taken from one
-- counter row (UPDATE ... RETURNING), whose row lock the taker holds until it commits or rolls
-- back: the next taker waits, so numbers become visible strictly in order, and a transaction that
-- rolls back takes its number back with it (no gaps). The triggers are deferred to commit time, so
-- the lock is held only for the commit itself, never while a body is being written. A table (not a
-- column on jobs) keeps every change, so a job stored twice appears twice and a consumer can
-- check that the numbers it read are contiguous.

CREATE TABLE harvester.changes (
    change_id  bigint PRIMARY KEY,
    job_id     uuid NOT NULL,
    state      text NOT NULL,
    job_type   text,
    -- 'finished': the job reached a final state (or moved to another one);
    -- 'restored': a finished job's stored body or normalized rows changed (import, reprocess)
    reason     text NOT NULL CHECK (reason IN ('finished', 'restored')),
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- the writing transaction: one change per job per transaction however many rows it wrote
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX changes_job_idx ON harvester.changes (job_id, change_id);
CREATE INDEX changes_changed_at_idx ON harvester.changes (changed_at);

CREATE TABLE harvester.change_counter (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last_change bigint NOT NULL
);
INSERT INTO harvester.change_counter (only_row, last_change) VALUES (true, 0);

-- What a store or reprocess normalized from a body, as a digest (store_rows.rows_digest): a
-- re-store that writes the same rows again is not a change.
ALTER TABLE harvester.results ADD COLUMN rows_digest text;

CREATE FUNCTION harvester.record_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    job record;
    number bigint;
BEGIN
    IF EXISTS (SELECT FROM harvester.changes c
                WHERE c.job_id = NEW.job_id AND c.xid = pg_current_xact_id()) THEN
        RETURN NULL;
    END IF;
    SELECT j.job_id, j.state, j.job_type INTO job FROM harvester.jobs j WHERE j.job_id = NEW.job_id;
    IF NOT FOUND OR job.state = 'pending' THEN
        RETURN NULL;
    END IF;
    UPDATE harvester.change_counter SET last_change = last_change + 1 RETURNING last_change INTO number;
    INSERT INTO harvester.changes (change_id, job_id, state, job_type, reason)
    VALUES (number, job.job_id, job.state, job.job_type, TG_ARGV[0]);
    -- The nudge: small, and one field per line so that adding one is a one-line change.
    PERFORM pg_notify('harvester_changes', json_build_object(
        'change', number,
        'job_id', job.job_id,
        'state', job.state,
        'job_type', job.job_type
    )::text);
    RETURN NULL;
END;
$$;

-- Deferred: they run at COMMIT, after every statement of the transaction, and see the job's final
-- state and type.
CREATE CONSTRAINT TRIGGER jobs_finished
    AFTER UPDATE OF state ON harvester.jobs
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (NEW.state <> 'pending' AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION harvester.record_change('finished');

CREATE CONSTRAINT TRIGGER results_restored
    AFTER UPDATE OF raw, rows_digest ON harvester.results
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (OLD.raw IS DISTINCT FROM NEW.raw OR OLD.rows_digest IS DISTINCT FROM NEW.rows_digest)
    EXECUTE FUNCTION harvester.record_change('restored');

-- ---------------------------------------------------------------- tags downstream
CREATE INDEX jobs_tags_idx ON harvester.jobs USING gin (tags jsonb_path_ops);

CREATE OR REPLACE VIEW harvester.site_contacts AS
SELECT s.job_id,
       s.url,
       s.domain,
       s.company_name,
       s.completed_at,
       COALESCE((SELECT array_agg(e.email ORDER BY e.email)
                   FROM harvester.site_emails e WHERE e.job_id = s.job_id), '{}') AS emails,
       COALESCE((SELECT array_agg(COALESCE(p.e164, p.phone) ORDER BY p.phone)
                   FROM harvester.site_phones p WHERE p.job_id = s.job_id), '{}') AS phones,
       so.linkedin, so.twitter, so.facebook, so.instagram, so.youtube, so.tiktok, so.github,
       so.pinterest, so.snapchat, so.reddit, so.medium, so.discord, so.whatsapp, so.telegram,
       j.tags
  FROM harvester.sites s
  LEFT JOIN harvester.jobs j ON j.job_id = s.job_id
  LEFT JOIN LATERAL (
       SELECT max(url) FILTER (WHERE platform = 'linkedin')  AS linkedin,
              max(url) FILTER (WHERE platform = 'twitter')   AS twitter,
              max(url) FILTER (WHERE platform = 'facebook')  AS facebook,
              max(url) FILTER (WHERE platform = 'instagram') AS instagram,
              max(url) FILTER (WHERE platform = 'youtube')   AS youtube,
              max(url) FILTER (WHERE platform = 'tiktok')    AS tiktok,
              max(url) FILTER (WHERE platform = 'github')    AS github,
              max(url) FILTER (WHERE platform = 'pinterest') AS pinterest,
              max(url) FILTER (WHERE platform = 'snapchat')  AS snapchat,
              max(url) FILTER (WHERE platform = 'reddit')    AS reddit,
              max(url) FILTER (WHERE platform = 'medium')    AS medium,
              max(url) FILTER (WHERE platform = 'discord')   AS discord,
              max(url) FILTER (WHERE platform = 'whatsapp')  AS whatsapp,
              max(url) FILTER (WHERE platform = 'telegram')  AS telegram
         FROM harvester.site_socials x WHERE x.job_id = s.job_id) so ON true;

CREATE OR REPLACE VIEW harvester.leads AS
SELECT s.job_id,
       COALESCE(s.company_name, s.personalization_hooks ->> 'company_name') AS company,
       s.domain,
       s.url,
       s.industry,
       s.icp_fit_score,
       s.lead_scoring -> 'champ_analysis' -> 'challenges'  AS champ_challenges,
       s.lead_scoring -> 'champ_analysis' ->> 'authority'  AS champ_authority,
       s.lead_scoring -> 'champ_analysis' ->> 'money'      AS champ_money,
       s.lead_scoring -> 'champ_analysis' ->> 'prioritization' AS champ_prioritization,
       COALESCE(s.personalization_hooks ->> 'decision_maker',
                (SELECT t.name || COALESCE(' (' || t.title || ')', '')
                   FROM harvester.team_members t
                  WHERE t.job_id = s.job_id
                  ORDER BY (t.title ~* '(ceo|founder|owner|president|chief|vp|head|director)') DESC,
                           t.position
                  LIMIT 1)) AS decision_maker,
       s.personalization_hooks ->> 'key_challenge' AS key_challenge,
       s.completed_at,
       j.tags
  FROM harvester.sites s
  LEFT JOIN harvester.jobs j ON j.job_id = s.job_id;

CREATE OR REPLACE VIEW harvester.latest_sites AS
SELECT DISTINCT ON (s.domain) s.*, j.tags
  FROM harvester.sites s
  LEFT JOIN harvester.jobs j ON j.job_id = s.job_id
 WHERE s.domain IS NOT NULL
 ORDER BY s.domain, s.completed_at DESC NULLS LAST, s.job_id;
