-- Migration bookkeeping.

-- name: lock_migrations
SELECT pg_advisory_lock(hashtext('harvester.migrate'))

-- name: unlock_migrations
SELECT pg_advisory_unlock(hashtext('harvester.migrate'))

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS public.harvester_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: select_applied_migrations
SELECT version FROM public.harvester_migrations ORDER BY version

-- name: insert_migration
INSERT INTO public.harvester_migrations (version) VALUES ($1)
