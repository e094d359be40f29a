-- Database roles for harvester. Run by an administrator (a superuser, or a role that is a member of
-- the current owner of schema harvester), in the harvester database:
--
--     psql -v ON_ERROR_STOP=1 -d harvester -f sql/roles.sql
--
-- Idempotent: rerun it any time. Run before the first `harvester migrate`, it prepares the daemon
-- to migrate; run it (again) after migrating, since the producer's column grant on harvester.jobs
-- and the reader's allow-list need the tables to exist; and rerun it after each upgrade so objects
-- added by new migrations are sorted into the right role (see "reader" below). Either the daemon
-- or this administrator may run `harvester migrate`; the daemon needs no CREATE right outside
-- schema harvester for it, and none at all to run `harvester run`.
--
-- Three NOLOGIN group roles; give them to login roles of your own:
--
--   harvester_daemon    owns schema harvester and everything in it, the migration ledger
--                       harvester.schema_migrations included: runs `harvester migrate` (or lets an
--                       administrator do it) and `harvester run` (all DML, sequences, functions).
--   harvester_producer  may only INSERT job ids into harvester.jobs (columns job_id, priority, tags,
--                       account),
--                       including INSERT ... ON CONFLICT DO NOTHING (no conflict target): what
--                       `harvester enqueue` sends. No SELECT, UPDATE or DELETE.
--   harvester_reader    may only SELECT the output tables, harvester.jobs, the change feed
--                       harvester.changes and its declared jumps harvester.change_jumps, and every
--                       view (among them harvester.limiter_status, for `harvester status`).
--                       LISTEN harvester_changes needs no grant.
--
-- For example:
--
--   CREATE ROLE harvester_svc LOGIN PASSWORD '...';
--   GRANT harvester_daemon TO harvester_svc;
--   -- so that tables created by future migrations belong to harvester_daemon, not to the login:
--   ALTER ROLE harvester_svc SET role = 'harvester_daemon';
--
--   CREATE ROLE crm_export LOGIN PASSWORD '...';
--   GRANT harvester_producer TO crm_export;
--
--   CREATE ROLE bi LOGIN PASSWORD '...';
--   GRANT harvester_reader TO bi;

-- ---------------------------------------------------------------- roles (cluster-wide)
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['harvester_daemon', 'harvester_producer', 'harvester_reader'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created concurrently by another run: that is what we wanted
            END;
        END IF;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------- the schema and its owner
-- Created here too so the grants below work before the first migration (which uses IF NOT EXISTS).
CREATE SCHEMA IF NOT EXISTS harvester;
ALTER SCHEMA harvester OWNER TO harvester_daemon;

-- Existing objects (created by whoever ran the migrations so far) move to harvester_daemon, so that
-- `harvester migrate` run as the daemon can alter them in later migrations.
DO $$
DECLARE
    obj record;
BEGIN
    FOR obj IN
        SELECT c.oid::regclass AS name,
               CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                              WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'harvester'::regnamespace
           AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
           AND c.relowner <> 'harvester_daemon'::regrole
           -- a sequence owned by a column follows its table
           AND NOT (c.relkind = 'S' AND EXISTS (
                   SELECT FROM pg_catalog.pg_depend d
                    WHERE d.objid = c.oid AND d.classid = 'pg_class'::regclass
                      AND d.deptype IN ('a', 'i')))
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO harvester_daemon', obj.kind, obj.name);
    END LOOP;
    FOR obj IN
        SELECT p.oid::regprocedure AS name,
               CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE'
                              ELSE 'FUNCTION' END AS kind
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'harvester'::regnamespace
           AND p.proowner <> 'harvester_daemon'::regrole
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO harvester_daemon', obj.kind, obj.name);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------- daemon
-- Ownership already gives all of this; the explicit grants also cover objects that a later
-- migration run by another role creates (with the default privileges further down).
GRANT USAGE, CREATE ON SCHEMA harvester TO harvester_daemon;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER
    ON ALL TABLES IN SCHEMA harvester TO harvester_daemon;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA harvester TO harvester_daemon;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA harvester TO harvester_daemon;
-- Nothing outside schema harvester: `harvester migrate` creates the schema only when it is missing
-- (this file created it above) and keeps its ledger inside it. Earlier versions of this file
-- granted CREATE on the database and on public for that; a rerun takes both back.
DO $$
BEGIN
    EXECUTE format('REVOKE CREATE ON DATABASE %I FROM harvester_daemon', current_database());
END
$$;
REVOKE CREATE ON SCHEMA public FROM harvester_daemon;

-- ---------------------------------------------------------------- producer
GRANT USAGE ON SCHEMA harvester TO harvester_producer;
DO $$
BEGIN
    IF to_regclass('harvester.jobs') IS NOT NULL THEN
        -- Exactly these columns, and nothing else on any table. Revoke first so a rerun also
        -- removes anything granted by hand since
        -- (revoking a table privilege also revokes its column privileges).
        REVOKE ALL ON ALL TABLES IN SCHEMA harvester FROM harvester_producer;
        GRANT INSERT (job_id, priority, tags) ON harvester.jobs TO harvester_producer;
        -- migration 010: the account a job belongs to
        IF EXISTS (SELECT FROM pg_catalog.pg_attribute
                    WHERE attrelid = 'harvester.jobs'::regclass AND attname = 'account'
                      AND NOT attisdropped) THEN
            GRANT INSERT (account) ON harvester.jobs TO harvester_producer;
        END IF;
    END IF;
END
$$;

-- ---------------------------------------------------------------- reader
-- Every table and view in the schema, minus the daemon's own bookkeeping (limiter and discovery
-- state, and whatever a later migration adds that is not an output): an allow-list of outputs.
GRANT USAGE ON SCHEMA harvester TO harvester_reader;
DO $$
DECLARE
    outputs constant text[] := ARRAY[
        'jobs', 'results', 'sites', 'site_emails', 'site_phones', 'site_addresses', 'site_socials',
        'team_members', 'maps_searches', 'businesses', 'maps_businesses', 'rejects', 'changes',
        'change_jumps'];
    obj record;
BEGIN
    FOR obj IN
        SELECT c.oid::regclass AS name, c.relkind IN ('v', 'm') OR c.relname = ANY (outputs) AS readable
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'harvester'::regnamespace
           AND c.relkind IN ('r', 'p', 'v', 'm')
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM harvester_reader', obj.name);
        IF obj.readable THEN
            EXECUTE format('GRANT SELECT ON %s TO harvester_reader', obj.name);
        END IF;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------- future objects
-- Objects created later by the daemon (migrations run as harvester_daemon) or by this
-- administrator stay covered. The reader gets SELECT on new tables and views at once (outputs are
-- what migrations usually add); rerunning this file takes it back from new internal tables.
ALTER DEFAULT PRIVILEGES FOR ROLE harvester_daemon IN SCHEMA harvester
    GRANT SELECT ON TABLES TO harvester_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA harvester
    GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON TABLES TO harvester_daemon;
ALTER DEFAULT PRIVILEGES IN SCHEMA harvester
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO harvester_daemon;
ALTER DEFAULT PRIVILEGES IN SCHEMA harvester
    GRANT EXECUTE ON FUNCTIONS TO harvester_daemon;
ALTER DEFAULT PRIVILEGES IN SCHEMA harvester
    GRANT SELECT ON TABLES TO harvester_reader;
