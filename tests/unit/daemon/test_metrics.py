"""The metrics registry: names, labels, the Observer calls and the text exposition."""

from __future__ import annotations

import re
import time

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from harvester.daemon.health import start_server
from harvester.daemon.metrics import ENDPOINTS, ERROR_KINDS, JOB_STATES, KNOWN_LABELS, NAMESPACE, Metrics
from tests.support.paths import PACKAGE

SOURCES = PACKAGE


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    """A sample's value; the series the plain Observer methods feed carry account="default"."""
    found = samples(metrics)
    exact = found.get((name, tuple(sorted(labels.items()))))
    if exact is not None or "account" in labels:
        return exact
    return found.get((name, tuple(sorted({**labels, "account": "default"}.items()))))


def test_each_instance_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.error("transient")
    assert value(first, "harvester_errors_total", kind="transient") == 1
    assert value(second, "harvester_errors_total", kind="transient") == 0


def test_an_explicit_registry_is_used() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.set_breaker_open(True)
    assert registry.get_sample_value("harvester_breaker_open", {"account": "default"}) == 1


def test_every_documented_metric_is_exported() -> None:
    names = {family.name for family in text_string_to_metric_families(Metrics().render().decode())}
    assert {
        "harvester_api_requests",
        "harvester_api_rate_limited",
        "harvester_limiter_tokens",
        "harvester_limiter_wait_seconds",
        "harvester_limiter_paused",
        "harvester_jobs",
        "harvester_oldest_pending_age_seconds",
        "harvester_harvest_latency_seconds",
        "harvester_polls_per_harvested_job",
        "harvester_store_latency_seconds",
        "harvester_errors",
        "harvester_jobs_finished",
        "harvester_breaker_open",
        "harvester_auth_paused",
    } <= names


def test_requests_by_endpoint_and_status_and_429s() -> None:
    metrics = Metrics()
    metrics.request_done("results", 200, 0.0)
    metrics.request_done("results", 202, 0.5)
    metrics.request_done("results", 429, 0.0)
    metrics.request_done("list", "error", 1.0)
    metrics.request_done("list", "timeout", 1.0)  # anything not a code is an error
    assert value(metrics, "harvester_api_requests_total", endpoint="results", status="200") == 1
    assert value(metrics, "harvester_api_requests_total", endpoint="results", status="429") == 1
    assert value(metrics, "harvester_api_requests_total", endpoint="list", status="error") == 2
    assert value(metrics, "harvester_api_rate_limited_total") == 1
    assert value(metrics, "harvester_limiter_wait_seconds_count") == 5
    assert value(metrics, "harvester_limiter_wait_seconds_sum") == 2.5


def test_finished_jobs_feed_polls_and_latency_only_when_harvested() -> None:
    metrics = Metrics()
    metrics.job_finished("harvested", 2, 4.0)
    metrics.job_finished("harvested", 1, None)
    metrics.job_finished("failed", 3, 9.0)
    assert value(metrics, "harvester_jobs_finished_total", state="harvested") == 2
    assert value(metrics, "harvester_jobs_finished_total", state="failed") == 1
    assert value(metrics, "harvester_polls_per_harvested_job_count") == 2
    assert value(metrics, "harvester_polls_per_harvested_job_sum") == 3
    assert value(metrics, "harvester_harvest_latency_seconds_count") == 1
    assert value(metrics, "harvester_harvest_latency_seconds_bucket", le="5.0") == 1


def test_store_latency_and_errors() -> None:
    metrics = Metrics()
    metrics.store_done(0.004)
    metrics.error("database")
    metrics.error("database")
    assert value(metrics, "harvester_store_latency_seconds_count") == 1
    assert value(metrics, "harvester_errors_total", kind="database") == 2


def test_job_counts_cover_every_state_and_reset_missing_ones() -> None:
    metrics = Metrics()
    metrics.set_job_counts({"pending": 7, "harvested": 3}, 12.5)
    assert value(metrics, "harvester_jobs", state="pending") == 7
    assert value(metrics, "harvester_oldest_pending_age_seconds") == 12.5
    metrics.set_job_counts({"harvested": 10}, None)
    assert value(metrics, "harvester_jobs", state="pending") == 0
    assert value(metrics, "harvester_jobs", state="harvested") == 10
    assert value(metrics, "harvester_oldest_pending_age_seconds") == 0
    assert all(value(metrics, "harvester_jobs", state=s) is not None for s in JOB_STATES)


def test_pause_gauges() -> None:
    metrics = Metrics()
    metrics.set_limiter(13.0, paused=True)
    metrics.set_auth_paused(True)
    assert value(metrics, "harvester_limiter_tokens") == 13
    assert value(metrics, "harvester_limiter_paused") == 1
    assert value(metrics, "harvester_auth_paused") == 1
    metrics.set_limiter(20.0, paused=False)
    metrics.set_auth_paused(False)
    assert value(metrics, "harvester_limiter_paused") == 0
    assert value(metrics, "harvester_auth_paused") == 0


def test_labels_are_only_accounts_endpoints_codes_states_kinds_and_event_types() -> None:
    metrics = Metrics()
    metrics.request_done("results", 200, 0.1)
    metrics.job_finished("harvested", 1, 1.0)
    metrics.error("auth")
    metrics.stream_event("campaign.progress", 0)
    metrics.for_account("acme").request_done("list", 429, 0.0)
    label_names = {name for (_, labels) in samples(metrics) for name, _ in labels}
    assert label_names <= {"account", "endpoint", "status", "state", "kind", "le", "type"}
    accounts = {v for (_, labels) in samples(metrics) for name, v in labels if name == "account"}
    assert accounts == {"default", "acme"}


def test_each_account_counts_its_own_requests_and_429s() -> None:
    metrics = Metrics()
    metrics.for_account("a").request_done("results", 200, 0.0)
    metrics.for_account("b").request_done("results", 429, 0.0)
    assert value(metrics, "harvester_api_requests_total", account="a", endpoint="results", status="200") == 1
    assert value(metrics, "harvester_api_rate_limited_total", account="a") == 0
    assert value(metrics, "harvester_api_rate_limited_total", account="b") == 1


def test_jobs_of_unknown_accounts_are_a_gauge_that_returns_to_zero() -> None:
    metrics = Metrics()
    metrics.set_unknown_accounts({"ghost": 3})
    assert value(metrics, "harvester_jobs_unknown_account", account="ghost") == 3
    metrics.set_unknown_accounts({})
    assert value(metrics, "harvester_jobs_unknown_account", account="ghost") == 0


def test_stream_event_types_are_a_closed_set() -> None:
    """An unknown or campaign event counts as 'other': a label value per event name would grow."""
    metrics = Metrics()
    for kind in ("job.completed", "campaign.progress", "somethingNew", "job.completed"):
        metrics.stream_event(kind, 1 if kind == "job.completed" else 0)
    assert value(metrics, "harvester_stream_events_total", type="job.completed") == 2
    assert value(metrics, "harvester_stream_events_total", type="other") == 2
    assert value(metrics, "harvester_stream_matched_total") == 2
    assert value(metrics, "harvester_stream_events_total", type="job.failed") == 0  # present at 0


class Alive:
    last_tick = time.monotonic()
    auth_ok = True
    paused_reason = None
    discovery_detail = None

    async def db_ok(self) -> bool:
        return True


async def test_a_fresh_registry_serves_every_known_counter_label_at_zero() -> None:
    """rate() and increase() need a 0 before the first error, or the first one is never seen."""
    handle = await start_server("127.0.0.1:0", Metrics(accounts=("default", "team-b")), Alive())
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{handle.port}/metrics") as response,
        ):
            text = await response.text()
    finally:
        await handle.close()
    families = list(text_string_to_metric_families(text))
    totals = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families
        if family.type == "counter"
        for s in family.samples
        if s.name.endswith("_total")
    }
    for account in ("default", "team-b"):  # every configured account's series, from the start
        for family, known in KNOWN_LABELS.items():
            for labels in known:
                key = tuple(sorted({**labels, "account": account}.items()))
                assert totals.get((f"{NAMESPACE}_{family}_total", key)) == 0, (family, labels, account)
    beyond_account = {name for (name, labels) in totals if len(labels) > 1}
    assert beyond_account == {f"{NAMESPACE}_{family}_total" for family in KNOWN_LABELS}  # none forgotten
    assert all(value == 0 for value in totals.values())
    assert totals[("harvester_api_rate_limited_total", (("account", "team-b"),))] == 0


def test_the_known_labels_cover_every_error_kind_and_endpoint_the_code_reports() -> None:
    text = "\n".join(path.read_text() for path in SOURCES.rglob("*.py"))
    kinds = set(re.findall(r"\.error\(\"(\w+)\"\)", text)) - {"name"}
    endpoints = set(re.findall(r"\.(?:observe|request_done)\(\"(\w+)\"", text))
    assert kinds and kinds <= set(ERROR_KINDS)
    assert endpoints and endpoints <= set(ENDPOINTS)


def test_new_gauges_for_alerts() -> None:
    metrics = Metrics()
    metrics.set_loop_tick(1_700_000_000.0)
    metrics.set_list_healthy(True)
    metrics.set_rate_limit(100.0, 10.0)
    assert value(metrics, "harvester_loop_last_tick_timestamp_seconds") == 1_700_000_000.0
    assert value(metrics, "harvester_list_healthy") == 1
    assert value(metrics, "harvester_rate_limit_requests_per_minute") == 100
    assert value(metrics, "harvester_rate_limit_reserve_per_minute") == 10


def test_every_metric_is_documented_in_the_operations_guide() -> None:
    guide = (SOURCES.parent / "docs" / "operations.md").read_text()
    for family in Metrics().registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        assert f"`{name}" in guide, name
