-- The queue, the output tables and the views downstream SQL reads.

-- Only when missing (harvester migrate creates it with the ledger, and sql/roles.sql may have):
-- CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema exists.
DO $$
BEGIN
    IF to_regnamespace('harvester') IS NULL THEN
        CREATE SCHEMA harvester;
    END IF;
END
$$;

-- ---------------------------------------------------------------- queue
CREATE TABLE harvester.jobs (
    job_id            uuid PRIMARY KEY,
    state             text NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'harvested', 'failed', 'cancelled',
                                       'not_found', 'rejected', 'expired')),
    priority          smallint NOT NULL DEFAULT 0,
    tags              jsonb NOT NULL DEFAULT '{}'::jsonb,
    job_type          text,
    upstream_status   text,
    enqueued_at       timestamptz NOT NULL DEFAULT now(),
    next_poll_at      timestamptz NOT NULL DEFAULT now(),
    last_polled_at    timestamptz,
    finished_at       timestamptz,
    polls             integer NOT NULL DEFAULT 0,
    last_http_status  integer,
    last_error        text,
    -- bookkeeping for the poll policy: consecutive 404s and consecutive transient faults
    not_found_count   integer NOT NULL DEFAULT 0,
    fault_count       integer NOT NULL DEFAULT 0,
    -- the lease: who holds the job, until when, and a fencing token bumped on every claim
    lease_owner       text,
    lease_expires_at  timestamptz,
    lease_token       bigint NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Claiming reads due pending jobs by priority, then due time. A claimed job's next_poll_at is moved
-- to its lease expiry, so this one index serves both "due" and "lease expired".
CREATE INDEX jobs_due_idx ON harvester.jobs (priority DESC, next_poll_at) WHERE state = 'pending';
CREATE INDEX jobs_state_idx ON harvester.jobs (state);
CREATE INDEX jobs_finished_idx ON harvester.jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Producers only insert: wake running daemons once per statement, not once per row.
CREATE FUNCTION harvester.notify_jobs_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('harvester_jobs', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_inserted AFTER INSERT ON harvester.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION harvester.notify_jobs_inserted();

-- ---------------------------------------------------------------- results
CREATE TABLE harvester.results (
    job_id                  uuid PRIMARY KEY,
    job_type                text,
    status                  text,
    success                 boolean,
    processing_time_seconds double precision,
    worker_id               text,
    completed_at            timestamptz,
    message                 text,
    error_message           text,
    raw                     jsonb NOT NULL,
    fetched_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX results_completed_idx ON harvester.results (completed_at);
CREATE INDEX results_fetched_idx ON harvester.results (fetched_at);

-- ---------------------------------------------------------------- spiderSite
CREATE TABLE harvester.sites (
    job_id                uuid PRIMARY KEY REFERENCES harvester.results (job_id) ON DELETE CASCADE,
    url                   text,
    domain                text,
    pages_crawled         integer,
    crawl_status          text,
    markdown_compendium   text,
    compendium            jsonb,
    company_vitals        jsonb,
    company_name          text,
    industry              text,
    pain_points           jsonb,
    lead_scoring          jsonb,
    icp_fit_score         double precision,
    personalization_hooks jsonb,
    metadata              jsonb,
    logo                  jsonb,
    custom_analysis       jsonb,
    completed_at          timestamptz
);
CREATE INDEX sites_domain_idx ON harvester.sites (domain, completed_at DESC);

CREATE TABLE harvester.site_emails (
    job_id uuid NOT NULL REFERENCES harvester.sites (job_id) ON DELETE CASCADE,
    email  text NOT NULL,
    PRIMARY KEY (job_id, email)
);
CREATE INDEX site_emails_email_idx ON harvester.site_emails (email);

CREATE TABLE harvester.site_phones (
    job_id       uuid NOT NULL REFERENCES harvester.sites (job_id) ON DELETE CASCADE,
    phone        text NOT NULL,
    e164         text,
    national     text,
    country_code text,
    phone_type   text,
    valid        boolean,
    PRIMARY KEY (job_id, phone)
);

CREATE TABLE harvester.site_addresses (
    job_id  uuid NOT NULL REFERENCES harvester.sites (job_id) ON DELETE CASCADE,
    address text NOT NULL,
    PRIMARY KEY (job_id, address)
);

CREATE TABLE harvester.site_socials (
    job_id   uuid NOT NULL REFERENCES harvester.sites (job_id) ON DELETE CASCADE,
    platform text NOT NULL CHECK (platform IN (
        'linkedin', 'twitter', 'facebook', 'instagram', 'youtube', 'tiktok', 'github',
        'pinterest', 'snapchat', 'reddit', 'medium', 'discord', 'whatsapp', 'telegram')),
    url      text NOT NULL,
    PRIMARY KEY (job_id, platform)
);

CREATE TABLE harvester.team_members (
    job_id   uuid NOT NULL REFERENCES harvester.sites (job_id) ON DELETE CASCADE,
    position integer NOT NULL,
    name     text,
    title    text,
    email    text,
    linkedin text,
    PRIMARY KEY (job_id, position)
);

-- ---------------------------------------------------------------- spiderMaps
CREATE TABLE harvester.maps_searches (
    job_id        uuid PRIMARY KEY REFERENCES harvester.results (job_id) ON DELETE CASCADE,
    query         text,
    results_count integer,
    metadata      jsonb
);

CREATE TABLE harvester.businesses (
    place_id        text PRIMARY KEY,
    name            text,
    rating          double precision,
    reviews_count   integer,
    address         text,
    phone           text,
    phone_e164      text,
    website         text,
    categories      text[] NOT NULL DEFAULT '{}',
    latitude        double precision,
    longitude       double precision,
    link            text,
    business_status text,
    price_range     text,
    working_hours   jsonb,
    image_url       text,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    last_job_id     uuid
);
CREATE INDEX businesses_categories_idx ON harvester.businesses USING gin (categories);

CREATE TABLE harvester.maps_businesses (
    job_id   uuid NOT NULL REFERENCES harvester.maps_searches (job_id) ON DELETE CASCADE,
    position integer NOT NULL,
    place_id text NOT NULL REFERENCES harvester.businesses (place_id),
    PRIMARY KEY (job_id, position)
);
CREATE INDEX maps_businesses_place_idx ON harvester.maps_businesses (place_id);

-- ---------------------------------------------------------------- rejects
CREATE TABLE harvester.rejects (
    reject_id   bigserial PRIMARY KEY,
    job_id      uuid,
    received_at timestamptz NOT NULL DEFAULT now(),
    reason      text NOT NULL,
    body        bytea NOT NULL
);
CREATE INDEX rejects_job_idx ON harvester.rejects (job_id);

-- ---------------------------------------------------------------- views
CREATE VIEW harvester.site_contacts AS
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
       so.pinterest, so.snapchat, so.reddit, so.medium, so.discord, so.whatsapp, so.telegram
  FROM harvester.sites s
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

CREATE VIEW harvester.leads AS
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
       s.completed_at
  FROM harvester.sites s;

CREATE VIEW harvester.latest_sites AS
SELECT DISTINCT ON (s.domain) s.*
  FROM harvester.sites s
 WHERE s.domain IS NOT NULL
 ORDER BY s.domain, s.completed_at DESC NULLS LAST, s.job_id;
