-- The gap a reconnecting event stream asks the list to cover: from the API time of the last event
-- its previous connection received. NULL with reconcile_requested: a full pass (no earlier
-- connection, so nothing says where the gap began).

ALTER TABLE harvester.discovery ADD COLUMN reconcile_since timestamptz;
