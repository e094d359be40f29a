"""When to spend a request: pure decisions, no I/O. The poll ``policy`` (when a job is due next),
run ``durations`` learned from finished jobs, the ``brakes`` (auth and rate-limit pauses, the
breaker), ``slots`` (fair shares of the in-flight requests), the ``queue_watch`` (where SpiderIQ's
queue stands) and the ``gate`` every request passes through."""
