-- Storing results: the completion time of the search that last wrote a business, so that
-- re-storing an older search (import, reprocess) never overwrites newer business details.

ALTER TABLE harvester.businesses ADD COLUMN last_completed_at timestamptz;
