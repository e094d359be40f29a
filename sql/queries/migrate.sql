-- Migration bookkeeping: the ledger harvester.schema_migrations, one row per applied migration with
-- the sha256 of its file as applied (harvester/db/migrate.py checks the files against it).

-- name: lock_migrations
SELECT pg_advisory_lock(hashtext('harvester.migrate'))

-- name: unlock_migrations
SELECT pg_advisory_unlock(hashtext('harvester.migrate'))

-- name: find_ledgers
-- Which of the schema, the ledger and its checksum column exist, and whether the ledger of
-- releases before migration 007 is still in public; needs no privilege on any of them.
SELECT to_regnamespace('harvester') IS NOT NULL AS has_schema,
       to_regclass('harvester.schema_migrations') IS NOT NULL AS has_ledger,
       EXISTS (SELECT FROM pg_catalog.pg_attribute
                WHERE attrelid = to_regclass('harvester.schema_migrations')
                  AND attname = 'checksum' AND NOT attisdropped) AS has_checksums,
       to_regclass('public.harvester_migrations') IS NOT NULL AS has_public_ledger

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS harvester

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS harvester.schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now(),
    checksum   text  -- sha256 hex of the file as applied; NULL only until a ledger adopts them
)

-- name: add_migration_checksums
-- A ledger made before checksums were recorded; migrate then adopts the current files' checksums.
ALTER TABLE harvester.schema_migrations ADD COLUMN IF NOT EXISTS checksum text

-- name: select_applied_migrations
SELECT version, checksum FROM harvester.schema_migrations ORDER BY version

-- name: select_applied_versions
-- The ledger before its first migrate by a release that records checksums (harvester run reads it).
SELECT version, NULL::text AS checksum FROM harvester.schema_migrations ORDER BY version

-- name: adopt_migration_checksum
UPDATE harvester.schema_migrations SET checksum = $2 WHERE version = $1 AND checksum IS NULL

-- name: insert_migration
INSERT INTO harvester.schema_migrations (version, checksum) VALUES ($1, $2)
