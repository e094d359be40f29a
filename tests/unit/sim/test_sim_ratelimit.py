"""The simulator's token bucket and rate meter, on explicit simulated times."""

from __future__ import annotations

from harvester.sim.ratelimit import RateMeter, TokenBucket


def test_bucket_lets_the_burst_through_then_refuses() -> None:
    bucket = TokenBucket(100, 20, now=0.0)
    answers = [bucket.take(0.0).allowed for _ in range(25)]
    assert answers.count(True) == 20
    assert answers[20:] == [False] * 5


def test_bucket_refills_one_token_every_0_6_seconds() -> None:
    bucket = TokenBucket(100, 20, now=0.0)
    for _ in range(20):
        bucket.take(0.0)
    assert not bucket.take(0.59).allowed
    assert bucket.take(0.61).allowed
    assert not bucket.take(0.62).allowed
    allowed = sum(bucket.take(0.61 + 0.01 * i).allowed for i in range(1, 120))
    # From 0.61 s to 1.80 s another ~2 tokens accrue.
    assert allowed == 1


def test_bucket_sustains_100_per_minute() -> None:
    bucket = TokenBucket(100, 20, now=0.0)
    allowed = sum(bucket.take(i * 0.1).allowed for i in range(600))  # 10 requests/s for 60 s
    assert allowed in (119, 120)


def test_refused_request_reports_retry_after_and_headers() -> None:
    bucket = TokenBucket(100, 20, now=0.0)
    first = bucket.take(0.0)
    assert (first.limit, first.remaining) == (100, 19)
    for _ in range(19):
        bucket.take(0.0)
    refused = bucket.take(0.0)
    assert not refused.allowed
    assert refused.remaining == 0
    assert 0.59 < refused.retry_after_s <= 0.6
    assert refused.full_in_s == 12.0


def test_meter_tracks_max_in_rolling_window() -> None:
    meter = RateMeter(100)
    for i in range(150):
        meter.record(i * 0.5)  # 2/s: 120 in any 60 s window
    assert meter.max_in_window == 120
    assert meter.total == 150


def test_meter_drops_requests_older_than_the_window() -> None:
    meter = RateMeter(100)
    for _ in range(50):
        meter.record(0.0)
    for _ in range(50):
        meter.record(61.0)
    assert meter.max_in_window == 50
    assert meter.in_window(61.0) == 50


def test_meter_burst_is_zero_excess_for_a_paced_client() -> None:
    meter = RateMeter(100)
    for i in range(200):
        meter.record(i * 0.6)
    assert meter.max_burst <= 1.0 + 1e-9


def test_meter_burst_counts_requests_beyond_the_sustained_rate() -> None:
    meter = RateMeter(100)
    for _ in range(30):
        meter.record(5.0)
    assert meter.max_burst == 30
