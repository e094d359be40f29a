-- Large values (raw bodies, compendiums) are compressed with lz4 instead of pglz where the server
-- supports it: several times faster to compress, which is most of the cost of storing a body.
-- Servers built without lz4 keep pglz; nothing else changes.
DO $$
BEGIN
    ALTER TABLE harvester.results ALTER COLUMN raw SET COMPRESSION lz4;
    ALTER TABLE harvester.sites ALTER COLUMN markdown_compendium SET COMPRESSION lz4,
                                ALTER COLUMN compendium SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 compression unavailable, keeping pglz: %', SQLERRM;
END
$$;
