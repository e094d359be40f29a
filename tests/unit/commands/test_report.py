"""The pure side of ``show`` and ``status --watch``: durations, the ETA, a frame's text."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest

from harvester.commands import report
from harvester.commands.export import Since, parse_since
from harvester.errors import UsageError


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.0, "0.0 s"),
        (4.25, "4.2 s"),
        (42.9, "42 s"),
        (192, "3 min 12 s"),
        (3600, "1 h 0 min"),
        (5 * 3600 + 3 * 60 + 59, "5 h 3 min"),
        (691_219, "8 d 0 h"),
        (-75, "-1 min 15 s"),
    ],
)
def test_human_duration(seconds: float | None, text: str) -> None:
    assert report.human_duration(seconds) == text


@pytest.mark.parametrize(
    ("pending", "per_min", "eta"),
    [(0, 0.0, 0.0), (10, 0.0, None), (120, 60.0, 120.0), (5, 30.0, 10.0)],
)
def test_eta(pending: int, per_min: float, eta: float | None) -> None:
    assert report.eta_s(pending, per_min) == eta


def snapshot(**changes: object) -> report.Snapshot:
    values: dict[str, object] = {
        "jobs": {"pending": 300, "harvested": 700, "failed": 3},
        "harvested": {60.0: 90, 300.0: 400},
        "finished": {60.0: 100, 300.0: 500},
        "oldest_pending": (UUID(int=7), 691_219.0),
        "limiters": [
            {
                "credential": "abababababab",
                "tokens": 3,
                "in_window": 97,
                "limit": 100,
                "window_s": 60.0,
                "burst": 20,
                "paused_until": None,
                "pause_reason": None,
            }
        ],
        "discovery": [],
        "by_tag": ("campaign", {"fall": {"pending": 1, "harvested": 3}, None: {"failed": 1}}),
    }
    values.update(changes)
    return report.Snapshot(**values)  # type: ignore[arg-type]


def test_a_frame_shows_rates_the_backlog_eta_and_the_budget() -> None:
    text = report.frame(snapshot(), title="t", width=120)
    assert "harvested 90/min (last min), 80.0/min (last 5 min); finished 100.0/min now" in text
    assert "00000000-0000-0000-0000-000000000007 (8 d 0 h old)" in text
    assert "backlog: 300 pending, ETA 3 min 0 s" in text
    assert "requests: 97 of 100 in the last 60 s (burst 20), 3 available now" in text
    lines = text.splitlines()
    assert all(len(line) <= 120 and line == line.rstrip() for line in lines)
    table = lines[lines.index(next(line for line in lines if line.startswith("campaign ="))) :]
    assert table[1].split() == ["fall", "4", "3", "1", "3", "0", "75.0"]
    assert table[2].split() == ["(no", "tag)", "1", "1", "0", "0", "1", "100.0"]


def test_a_quiet_queue_has_no_eta_and_a_narrow_screen_cuts_lines() -> None:
    quiet = snapshot(finished={}, harvested={}, by_tag=None)
    text = report.frame(quiet, title="t", width=30)
    assert "ETA unknown" in report.frame(quiet, title="t", width=200)
    assert max(len(line) for line in text.splitlines()) <= 30


def test_since_is_a_change_number_or_a_time() -> None:
    assert parse_since(None) == Since()
    assert parse_since("42") == Since(change=42)
    assert parse_since("2026-12-01T10:00:00+01:00") == Since(time=datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    assert parse_since("2026-12-01 09:00") == Since(time=datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    with pytest.raises(UsageError, match="--since"):
        parse_since("yesterday")


def test_a_harvest_younger_than_the_window_is_rated_over_its_own_age() -> None:
    young = snapshot(
        finished={60.0: 20, 300.0: 20}, harvested={60.0: 20, 300.0: 20}, spans={60.0: 20.0, 300.0: 20.0}
    )
    assert young.per_min(young.harvested, 300.0) == 60.0
    assert young.rate_for_eta() == 60.0
