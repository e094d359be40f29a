"""Classifying a hostile body never raises: the loop gets an outcome it can act on.

Found by the hostile corpus through the running daemon: a 200 body nested 10,000 deep made
``json.loads`` raise RecursionError inside the client, so every poll ended in ``job_error`` and
the job was retried for ever instead of being stored as a reject.
"""

from __future__ import annotations

import time

import pytest

from harvester.api import classify
from harvester.api.outcomes import Completed, Gone, Outcome, Pending, RateLimited, Unreadable

DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 50_000 + b"1" + b"}" * 50_000


def classify_result(status: int, headers: dict[str, str], body: bytes) -> Outcome:
    return classify.classify_result(status, headers, body, time.time(), scrub=str)


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["array", "object"])
def test_deep_body_on_200_is_completed_for_the_store_to_reject(body: bytes) -> None:
    outcome = classify_result(200, {}, body)
    assert isinstance(outcome, Completed)
    assert outcome.body == body
    assert outcome.doc == Unreadable("body is nested too deeply to parse")


@pytest.mark.parametrize(("status", "kind"), [(202, Pending), (410, Gone)])
def test_deep_body_on_other_statuses_follows_the_http_code(status: int, kind: type) -> None:
    """202 and 410 mean pending and gone whatever the body; a 410's store keeps it as a reject."""
    assert isinstance(classify_result(status, {}, DEEP), kind)


def test_deep_body_on_429_still_pauses() -> None:
    outcome = classify_result(429, {"Retry-After": "5"}, DEEP)
    assert isinstance(outcome, RateLimited) and outcome.retry_after_s == 5
