"""Prometheus metrics for the daemon, in a registry of their own.

``Metrics`` owns one ``CollectorRegistry`` (a fresh one per instance unless one is passed in), so
tests and several daemons in one process never collide on the global registry. It is also the
worker's ``Observer``: the loop calls ``request_done``, ``job_finished``, ``store_done`` and
``error``, each cheap and never raising. Gauges that mirror state elsewhere (jobs per state from the
database, limiter tokens, pauses) are set by whoever knows that state, through the ``set_*``
methods. Labels only ever carry endpoint names, HTTP codes, job states and error kinds: never the
token, a job id or a body. Every series about requests, pauses and the stream carries ``account``
(the account's configured name, never its token). Every labelled counter starts with its known
label values at 0 for each configured account (``KNOWN_LABELS``), so ``rate()`` and ``increase()``
see the first error as a change from 0 rather than a series that appears already at 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

DEFAULT_ACCOUNT = "default"  # config.DEFAULT_ACCOUNT; not imported, metrics stays a leaf module

NAMESPACE = "harvester"
JOB_STATES = ("pending", "harvested", "failed", "cancelled", "not_found", "rejected", "expired")
FINAL_STATES = tuple(state for state in JOB_STATES if state != "pending")
# The endpoints the daemon calls (``Gate.observe``) and the answers each can get: the codes the
# classifier tells apart, the usual 5xx, and 'error' for no answer at all. Other codes still count,
# from their first request.
ENDPOINTS = ("results", "list", "stream")
HTTP_STATUSES = ("200", "202", "401", "402", "403", "404", "410", "429", "500", "502", "503", "504", "error")
# ``Metrics.error`` kinds: the gate's (transient, auth, rate_limited), the worker's (database,
# unexpected) and the server's (metrics_refresh).
ERROR_KINDS = ("transient", "auth", "rate_limited", "database", "unexpected", "metrics_refresh")

# Seconds: the limiter waits from nothing to a full budget-refusal pause.
WAIT_BUCKETS = (0.005, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Seconds from SpiderIQ's completed_at to the row being stored: ideally a few seconds.
LATENCY_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
STREAM_EVENT_TYPES = (
    "connected",
    "heartbeat",
    "error",
    "job.queued",
    "job.started",
    "job.completed",
    "job.failed",
    "other",
)
POLL_BUCKETS = (1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0, 50.0)
STORE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


# Every labelled counter's known label sets, each exported at 0 from the start.
KNOWN_LABELS: dict[str, list[dict[str, str]]] = {
    "api_requests": [{"endpoint": e, "status": s} for e in ENDPOINTS for s in HTTP_STATUSES],
    "errors": [{"kind": kind} for kind in ERROR_KINDS],
    "jobs_finished": [{"state": state} for state in FINAL_STATES],
    "stream_events": [{"type": kind} for kind in STREAM_EVENT_TYPES],
}


class Metrics:
    """Every metric the daemon exports, registered on one registry."""

    def __init__(
        self, registry: CollectorRegistry | None = None, accounts: Sequence[str] = (DEFAULT_ACCOUNT,)
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.api_requests = Counter(
            "api_requests",
            "SpiderIQ API requests by endpoint and HTTP status ('error' when no response arrived).",
            ["account", "endpoint", "status"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.api_rate_limited = Counter(
            "api_rate_limited", "API requests answered 429.", ["account"], namespace=NAMESPACE, registry=r
        )
        self.limiter_tokens = Gauge(
            "limiter_tokens",
            "Requests the shared limiter would allow right now.",
            ["account"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.limiter_wait = Histogram(
            "limiter_wait_seconds",
            "Time a request waited for the shared limiter.",
            ["account"],
            namespace=NAMESPACE,
            registry=r,
            buckets=WAIT_BUCKETS,
        )
        self.limiter_paused = Gauge(
            "limiter_paused",
            "1 while the limiter is paused by a 429 or budget refusal.",
            ["account"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.jobs = Gauge(
            "jobs",
            "Jobs in the queue table by state (refreshed from the database).",
            ["state"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.oldest_pending_age = Gauge(
            "oldest_pending_age_seconds",
            "Age of the oldest pending job (0 when none).",
            namespace=NAMESPACE,
            registry=r,
        )
        self.harvest_latency = Histogram(
            "harvest_latency_seconds",
            "From the job's completion upstream to its result stored.",
            ["account"],
            namespace=NAMESPACE,
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.polls_per_job = Histogram(
            "polls_per_harvested_job",
            "API requests spent on each harvested job.",
            ["account"],
            namespace=NAMESPACE,
            registry=r,
            buckets=POLL_BUCKETS,
        )
        self.store_latency = Histogram(
            "store_latency_seconds",
            "Time to store one result (one transaction).",
            namespace=NAMESPACE,
            registry=r,
            buckets=STORE_BUCKETS,
        )
        self.errors = Counter(
            "errors",
            "Errors by kind (transient, auth, rate_limited, database, unexpected, ...).",
            ["account", "kind"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.jobs_finished = Counter(
            "jobs_finished",
            "Jobs that reached a final state, by state.",
            ["account", "state"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.breaker_open = Gauge(
            "breaker_open",
            "1 while the circuit breaker pauses polling.",
            ["account"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.auth_paused = Gauge(
            "auth_paused",
            "1 while polling is paused because the credential was refused.",
            ["account"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.stream_connected = Gauge(
            "stream_connected",
            "1 while this process holds the credential's event stream and it is connected.",
            ["account"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.stream_events = Counter(
            "stream_events",
            "Event-stream events received, by type ('other' for unknown and campaign events).",
            ["account", "type"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.stream_reconnects = Counter(
            "stream_reconnects",
            "Event-stream connections opened after the first.",
            ["account"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.stream_matched = Counter(
            "stream_matched",
            "Event-stream job events that concerned one of our pending jobs.",
            ["account"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.jobs_unknown_account = Gauge(
            "jobs_unknown_account",
            "Pending jobs of an account this process is not configured for: they wait, never polled.",
            ["account"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.list_healthy = Gauge(
            "list_healthy",
            "1 while /jobs/list discovery passes succeed (always 0 with polling.discovery = 'poll').",
            ["account"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.loop_last_tick = Gauge(
            "loop_last_tick_timestamp_seconds",
            "Unix time of the worker loop's last iteration (what /healthz and the watchdog read).",
            namespace=NAMESPACE,
            registry=r,
        )
        self.rate_limit = Gauge(
            "rate_limit_requests_per_minute",
            "The configured per-credential limit (rate_limit.requests_per_minute).",
            ["account"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.rate_reserve = Gauge(
            "rate_limit_reserve_per_minute",
            "Requests a minute left for the credential's other users (rate_limit.reserve_per_minute).",
            ["account"],
            namespace=NAMESPACE,
            registry=r,
        )
        for state in JOB_STATES:
            self.jobs.labels(state=state).set(0)
        self._unknown_seen: set[str] = set()
        self._accounts: dict[str, AccountMetrics] = {}
        for account in accounts:
            self.for_account(account)

    def for_account(self, account: str) -> AccountMetrics:
        """The ``Observer`` of one account: every series it feeds carries ``account`` (its known
        label values exported at 0 from the first call)."""
        found = self._accounts.get(account)
        if found is None:
            found = self._accounts[account] = AccountMetrics(self, account)
        return found

    # ------------------------------------------------------------ the worker's Observer (default)
    def request_done(self, endpoint: str, status: int | str, wait_s: float) -> None:
        self.for_account(DEFAULT_ACCOUNT).request_done(endpoint, status, wait_s)

    def job_finished(self, state: str, polls: int, latency_s: float | None) -> None:
        self.for_account(DEFAULT_ACCOUNT).job_finished(state, polls, latency_s)

    def store_done(self, seconds: float) -> None:
        self.store_latency.observe(max(seconds, 0.0))

    def stream_event(self, kind: str, matched: int) -> None:
        self.for_account(DEFAULT_ACCOUNT).stream_event(kind, matched)

    def stream_state(self, connected: bool, *, reconnect: bool = False) -> None:
        self.for_account(DEFAULT_ACCOUNT).stream_state(connected, reconnect=reconnect)

    def error(self, kind: str) -> None:
        self.for_account(DEFAULT_ACCOUNT).error(kind)

    # ------------------------------------------------------------ state mirrors
    def set_job_counts(self, counts: Mapping[str, int], oldest_pending_age_s: float | None) -> None:
        """Jobs per state as last read from the database; states not in ``counts`` read 0."""
        for state in {*JOB_STATES, *counts}:
            self.jobs.labels(state=state).set(counts.get(state, 0))
        self.oldest_pending_age.set(max(oldest_pending_age_s or 0.0, 0.0))

    def set_unknown_accounts(self, waiting: Mapping[str, int]) -> None:
        """Pending jobs per unconfigured account; an account no longer waiting reads 0."""
        for name in self._unknown_seen - set(waiting):
            self.jobs_unknown_account.labels(account=name).set(0)
        self._unknown_seen |= set(waiting)
        for name, count in waiting.items():
            self.jobs_unknown_account.labels(account=name).set(count)

    def set_limiter(self, tokens: float, paused: bool, account: str = DEFAULT_ACCOUNT) -> None:
        self.limiter_tokens.labels(account=account).set(tokens)
        self.limiter_paused.labels(account=account).set(1 if paused else 0)

    def set_breaker_open(self, is_open: bool, account: str = DEFAULT_ACCOUNT) -> None:
        self.breaker_open.labels(account=account).set(1 if is_open else 0)

    def set_auth_paused(self, paused: bool, account: str = DEFAULT_ACCOUNT) -> None:
        self.auth_paused.labels(account=account).set(1 if paused else 0)

    def set_list_healthy(self, healthy: bool, account: str = DEFAULT_ACCOUNT) -> None:
        self.list_healthy.labels(account=account).set(1 if healthy else 0)

    def set_loop_tick(self, unix_time: float) -> None:
        self.loop_last_tick.set(unix_time)

    def set_rate_limit(
        self, requests_per_minute: float, reserve_per_minute: float, account: str = DEFAULT_ACCOUNT
    ) -> None:
        self.rate_limit.labels(account=account).set(requests_per_minute)
        self.rate_reserve.labels(account=account).set(reserve_per_minute)

    # ------------------------------------------------------------ exposition
    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


class AccountMetrics:
    """One account's view of ``Metrics``: the ``Observer`` its worker, list and stream report to."""

    __slots__ = ("account", "metrics")

    def __init__(self, metrics: Metrics, account: str) -> None:
        self.metrics = metrics
        self.account = account
        for family, known in (
            (metrics.api_requests, KNOWN_LABELS["api_requests"]),
            (metrics.errors, KNOWN_LABELS["errors"]),
            (metrics.jobs_finished, KNOWN_LABELS["jobs_finished"]),
            (metrics.stream_events, KNOWN_LABELS["stream_events"]),
        ):
            for labels in known:
                family.labels(account=account, **labels)
        for name in (
            metrics.api_rate_limited,
            metrics.stream_reconnects,
            metrics.stream_matched,
            metrics.limiter_wait,
            metrics.harvest_latency,
            metrics.polls_per_job,
            metrics.stream_connected,
            metrics.breaker_open,
            metrics.auth_paused,
            metrics.limiter_paused,
        ):
            # histograms and state gauges too: a panel or a rule sees them (at 0) from the start
            name.labels(account=account)

    def request_done(self, endpoint: str, status: int | str, wait_s: float) -> None:
        """One API request finished (``status`` is the HTTP code, or 'error' with no response)."""
        m, account = self.metrics, self.account
        label = str(status) if isinstance(status, int) or status.isdigit() else "error"
        m.api_requests.labels(account=account, endpoint=endpoint, status=label).inc()
        if label == "429":
            m.api_rate_limited.labels(account=account).inc()
        if wait_s >= 0:
            m.limiter_wait.labels(account=account).observe(wait_s)

    def job_finished(self, state: str, polls: int, latency_s: float | None) -> None:
        """A job left ``pending`` for ``state`` after ``polls`` requests."""
        m, account = self.metrics, self.account
        m.jobs_finished.labels(account=account, state=state).inc()
        if state == "harvested":
            m.polls_per_job.labels(account=account).observe(max(polls, 0))
            if latency_s is not None and latency_s >= 0:
                m.harvest_latency.labels(account=account).observe(latency_s)

    def store_done(self, seconds: float) -> None:
        self.metrics.store_done(seconds)

    def stream_event(self, kind: str, matched: int) -> None:
        m, account = self.metrics, self.account
        m.stream_events.labels(account=account, type=kind if kind in STREAM_EVENT_TYPES else "other").inc()
        if matched:
            m.stream_matched.labels(account=account).inc(matched)

    def stream_state(self, connected: bool, *, reconnect: bool = False) -> None:
        m, account = self.metrics, self.account
        m.stream_connected.labels(account=account).set(1 if connected else 0)
        if reconnect:
            m.stream_reconnects.labels(account=account).inc()

    def error(self, kind: str) -> None:
        self.metrics.errors.labels(account=self.account, kind=kind).inc()
