-- With a large backlog, the daemon asks often for the earliest due time, the oldest pending job
-- (discovery's starting point) and the jobs past give_up_after. Without these partial indexes each
-- of those is a scan of every pending row (about 100 ms at a million).
CREATE INDEX IF NOT EXISTS jobs_pending_enqueued_idx ON harvester.jobs (enqueued_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS jobs_pending_next_idx ON harvester.jobs (next_poll_at) WHERE state = 'pending';
