"""Learning what SpiderIQ did without polling each job: the job list (``listing``: pages of
statuses, reconciled into the queue) and the event stream (``stream``: started and finished jobs as
they happen). Both turn news into due times through the seam of ``harvester.ports``."""
