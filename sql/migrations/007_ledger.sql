-- The migration ledger moves into schema harvester: older versions kept it in
-- public.harvester_migrations, which a role without CREATE on public (the PostgreSQL 15 default)
-- cannot create. harvester migrate has already created harvester.schema_migrations and read both;
-- this copies the old rows over (keeping their applied_at) and drops the old table.
DO $$
BEGIN
    IF to_regclass('public.harvester_migrations') IS NOT NULL THEN
        INSERT INTO harvester.schema_migrations (version, applied_at)
        SELECT version, applied_at FROM public.harvester_migrations
        ON CONFLICT (version) DO NOTHING;
        DROP TABLE public.harvester_migrations;
    END IF;
END
$$;
