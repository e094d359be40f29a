-- Completion discovery through /jobs/list: one shared watermark per credential, leased so that only
-- one process reads list pages at a time.

CREATE TABLE harvester.discovery (
    credential       text PRIMARY KEY,          -- a fingerprint of the API token, never the token
    watermark        timestamptz,               -- newest updated_at seen on a list page
    last_pass_at     timestamptz,
    lease_owner      text,
    lease_expires_at timestamptz,
    passes           bigint NOT NULL DEFAULT 0,
    pages            bigint NOT NULL DEFAULT 0,
    discovered       bigint NOT NULL DEFAULT 0
);
