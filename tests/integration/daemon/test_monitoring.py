"""deploy/grafana and deploy/prometheus: valid PromQL, over metrics a running daemon really exports.

The rules go through ``promtool check rules`` and their own unit tests (``promtool test rules``);
the dashboard's expressions go through ``promtool`` too, as recording rules. Every metric name
either names is looked up in the ``/metrics`` text of a real daemon run against the simulator.
Without promtool these tests skip, except in CI (``CI=true``), where its absence is a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from harvester.daemon import run as daemon
from harvester.daemon.metrics import KNOWN_LABELS, NAMESPACE
from harvester.sim import SimServer
from tests.support.e2e import TOKEN, daemon_config
from tests.support.paths import DEPLOY

DASHBOARD = DEPLOY / "grafana" / "harvester.json"
RULES = DEPLOY / "prometheus" / "harvester-rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "harvester-rules.test.yml"
# Series Prometheus makes itself for every target.
PROMETHEUS_OWN = {"up"}
# Grafana's variables, as Prometheus would see them once Grafana has filled them in.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".+"}
KEYWORDS = {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"(?<![\w.$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
SPEED = 30.0


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool not installed (Debian package prometheus)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip", pytrace=False)
        pytest.skip(reason)
    return found


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - promtool from PATH, fixed arguments
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


def dashboard_exprs() -> list[str]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[str]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield target["expr"]
            yield from walk(panel.get("panels", []))

    return list(walk(json.loads(DASHBOARD.read_text())["panels"]))


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def as_prometheus(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings first: they may hold braces
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = GROUPING.sub("", text)
    return {name for name in IDENTIFIER.findall(text) if name not in KEYWORDS}


def test_the_metric_name_reader_skips_functions_labels_and_keywords() -> None:
    expr = (
        'sum by (le) (rate(harvester_x_bucket{job=~"$job", kind="a{b}"}[$__rate_interval])) '
        "and on (instance) harvester_y offset 15m > 0.9 * max(up)"
    )
    assert metric_names(expr) == {"harvester_x_bucket", "harvester_y", "up"}


def test_rules_pass_promtool_check() -> None:
    proc = run_promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_rules_pass_their_promtool_unit_tests() -> None:
    proc = run_promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_the_rules_cover_every_promised_alert() -> None:
    doc = yaml.safe_load(RULES.read_text())
    alerts = {rule["alert"] for group in doc["groups"] for rule in group["rules"]}
    assert {
        "HarvesterCredentialRefused",
        "HarvesterBreakerOpen",
        "HarvesterBudgetSaturatedBacklogGrowing",
        "HarvesterOldestPendingTooOld",
        "HarvesterDown",
        "HarvesterLoopStale",
    } <= alerts


def test_dashboard_expressions_are_valid_promql(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:expr_{i}", "expr": as_prometheus(e)} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    proc = run_promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_has_a_datasource_variable_and_unique_panel_ids() -> None:
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for title in ("Jobs by state", "Requests per minute against the limit", "Database errors"):
        assert title in {panel["title"] for panel in board["panels"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def scrape_daemon(dsn: str) -> str:
    """The /metrics text of a real daemon (no jobs) against the simulator, after its first ticks."""
    port = free_port()
    async with SimServer(speed=SPEED, seed=17, tokens=[TOKEN]) as sim:
        cfg = daemon_config(dsn, sim, SPEED, **{"server.enabled": True, "server.listen": f"127.0.0.1:{port}"})
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(cfg, stop))
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(200):
                    if task.done():
                        await task  # raises what stopped it
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                            if response.status == 200:
                                return await response.text()
                    except aiohttp.ClientConnectionError:
                        pass
                    await asyncio.sleep(0.05)
            raise AssertionError("the daemon never served /metrics")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


def sample_names(text: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


async def test_dashboard_and_rules_name_only_metrics_the_daemon_exports(db_dsn: str) -> None:
    exported = sample_names(await scrape_daemon(db_dsn)) | PROMETHEUS_OWN
    named = {
        (where, name)
        for where, exprs in (("dashboard", dashboard_exprs()), ("rules", rule_exprs()))
        for expr in exprs
        for name in metric_names(as_prometheus(expr))
    }
    assert {name for _, name in named} >= {
        "harvester_loop_last_tick_timestamp_seconds",
        "harvester_rate_limit_requests_per_minute",
        "harvester_api_requests_total",
    }
    assert sorted(f"{where}: {name}" for where, name in named if name not in exported) == []


async def test_a_fresh_daemon_exports_every_known_counter_label(db_dsn: str) -> None:
    samples = {
        (s.name, tuple(sorted(s.labels.items())))
        for family in text_string_to_metric_families(await scrape_daemon(db_dsn))
        for s in family.samples
    }
    missing = [
        (family, labels)
        for family, known in KNOWN_LABELS.items()
        for labels in known
        if (f"{NAMESPACE}_{family}_total", tuple(sorted({**labels, "account": "default"}.items())))
        not in samples
    ]
    assert missing == []
