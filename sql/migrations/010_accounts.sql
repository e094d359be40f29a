-- Several SpiderIQ accounts in one deployment. Every job belongs to one account (the client whose
-- token submitted it: another client's token gets 404), and the limiter, the discovery watermark
-- and the event stream are kept per account, keyed by the account's name instead of a
-- fingerprint of its token, so that a rotated token keeps its account's budget and lease.

ALTER TABLE harvester.jobs ADD COLUMN account text NOT NULL DEFAULT 'default';
-- Account names are slugs (what config accepts); NOT VALID: the existing rows are all 'default'
-- and a big queue is not scanned to prove it.
ALTER TABLE harvester.jobs ADD CONSTRAINT jobs_account_slug
    CHECK (account ~ '^[a-z0-9][a-z0-9_-]{0,62}$') NOT VALID;
-- Claims take one account's due jobs: an account with a huge backlog does not slow the next.
CREATE INDEX jobs_due_account_idx ON harvester.jobs (account, priority DESC, next_poll_at)
    WHERE state = 'pending';
-- Adopted jobs (found on an account's list or stream, not enqueued by a producer) say so here.
ALTER TABLE harvester.jobs ADD COLUMN adopted boolean NOT NULL DEFAULT false;

-- The limiter row and the discovery row of the one credential a database had so far become the
-- rows of the account 'default': its budget, pause and watermark carry over. Rows of tokens no
-- longer in use (an earlier rotation) are dropped.
UPDATE harvester.rate_limits SET credential = 'default'
 WHERE credential = (SELECT credential FROM harvester.rate_limits ORDER BY updated_at DESC LIMIT 1)
   AND NOT EXISTS (SELECT FROM harvester.rate_limits WHERE credential = 'default');
DELETE FROM harvester.rate_limits WHERE credential <> 'default';
UPDATE harvester.discovery SET credential = 'default'
 WHERE credential = (SELECT credential FROM harvester.discovery
                      ORDER BY last_pass_at DESC NULLS LAST LIMIT 1)
   AND NOT EXISTS (SELECT FROM harvester.discovery WHERE credential = 'default');
DELETE FROM harvester.discovery WHERE credential <> 'default';

-- The status views name the account in full (a new last column; credential keeps its meaning).
CREATE OR REPLACE VIEW harvester.limiter_status AS
SELECT left(l.credential, 12) AS credential,
       l.n_limit, l.window_s, l.interval_s, l.burst, l.margin,
       l.paused_until, l.pause_reason, l.granted_total, l.pauses_total, l.updated_at,
       c.db_now, p.next_at, p.available, p.in_window,
       l.credential AS account
  FROM harvester.rate_limits AS l,
       LATERAL (SELECT clock_timestamp() AS db_now) AS c,
       LATERAL harvester.rate_peek_state(l.tat, l.grants, l.paused_until, c.db_now,
                                         coalesce(l.n_limit, 1), coalesce(l.window_s, 60),
                                         coalesce(l.interval_s, 0.6), coalesce(l.burst, 1),
                                         coalesce(l.margin, 0), 0, coalesce(l.n_limit, 1)) AS p;

CREATE OR REPLACE VIEW harvester.discovery_status AS
SELECT left(credential, 12) AS credential,
       watermark,
       last_pass_at,
       passes,
       pages,
       discovered,
       stream_owner IS NOT NULL AND stream_expires_at > now() AS stream_held,
       CASE WHEN stream_expires_at > now() THEN stream_connected_at END AS stream_connected_at,
       stream_events,
       stream_matched,
       credential AS account
  FROM harvester.discovery;

-- Pending jobs per account, for `harvester status` (reader role) and /readyz: which accounts
-- have work waiting, including accounts no running daemon is configured for.
CREATE VIEW harvester.pending_by_account AS
SELECT account, count(*)::bigint AS pending
  FROM harvester.jobs
 WHERE state = 'pending'
 GROUP BY account;

-- The output views carry the account (and the job's tags) from 011_changes.sql on.
