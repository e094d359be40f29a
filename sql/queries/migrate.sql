-- Migration bookkeeping: the ledger harvester.schema_migrations, one row per applied migration.
-- Older versions kept it in public.harvester_migrations; migration 007 moves it over, and until
-- then both are read.

-- name: lock_migrations
SELECT pg_advisory_lock(hashtext('harvester.migrate'))

-- name: unlock_migrations
SELECT pg_advisory_unlock(hashtext('harvester.migrate'))

-- name: find_ledgers
-- Which of the schema, the ledger and the old ledger exist; needs no privilege on any of them.
SELECT to_regnamespace('harvester') IS NOT NULL AS has_schema,
       to_regclass('harvester.schema_migrations') IS NOT NULL AS has_ledger,
       to_regclass('public.harvester_migrations') IS NOT NULL AS has_legacy_ledger

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS harvester

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS harvester.schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: select_applied_migrations
SELECT version FROM harvester.schema_migrations ORDER BY version

-- name: select_legacy_migrations
SELECT version FROM public.harvester_migrations ORDER BY version

-- name: insert_migration
INSERT INTO harvester.schema_migrations (version) VALUES ($1)
