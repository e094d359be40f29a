-- The event stream: one per credential, held by one process at a time (a lease beside the list
-- discovery's), and a request for a reconciling list pass after every (re)connect.

ALTER TABLE harvester.discovery
    ADD COLUMN stream_owner        text,
    ADD COLUMN stream_expires_at   timestamptz,
    ADD COLUMN stream_connected_at timestamptz,           -- NULL while the holder is not connected
    ADD COLUMN stream_events       bigint NOT NULL DEFAULT 0,
    ADD COLUMN stream_matched      bigint NOT NULL DEFAULT 0,  -- events that concerned a pending job
    ADD COLUMN reconcile_requested boolean NOT NULL DEFAULT false;

-- What `harvester status` shows of discovery, for roles that may not read the table itself.
CREATE VIEW harvester.discovery_status AS
SELECT left(credential, 12) AS credential,
       watermark,
       last_pass_at,
       passes,
       pages,
       discovered,
       stream_owner IS NOT NULL AND stream_expires_at > now() AS stream_held,
       CASE WHEN stream_expires_at > now() THEN stream_connected_at END AS stream_connected_at,
       stream_events,
       stream_matched
  FROM harvester.discovery;
