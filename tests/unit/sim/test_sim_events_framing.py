"""The simulator's SSE framing: every variant still parses to the same JSON."""

from __future__ import annotations

import json

from harvester.sim.events import data_lines, frame
from harvester.sim.hub import Item, results_count


def test_plain_event() -> None:
    assert frame(Item(0.0, "heartbeat", {"timestamp": "T"}), "\n") == (
        'event: heartbeat\ndata: {"timestamp": "T"}\n\n'
    )


def test_comment_and_retry_and_crlf() -> None:
    assert frame(Item(0.0, None, comment="keep-alive"), "\r\n") == ": keep-alive\r\n\r\n"
    text = frame(Item(0.0, "connected", {"client_id": "c"}), "\r\n", retry_ms=3000)
    assert text == 'retry: 3000\r\nevent: connected\r\ndata: {"client_id": "c"}\r\n\r\n'


def test_split_data_is_the_same_json() -> None:
    data = {"job_id": "j", "error_message": 'a, "quoted", b', "n": [1, 2]}
    lines = data_lines(data, split=True)
    assert len(lines) == 2
    assert json.loads("\n".join(lines)) == data
    assert data_lines({"only": 1}, split=True) == ['{"only": 1}']


def test_results_count() -> None:
    assert results_count({"results_count": 7, "businesses": []}) == 7
    assert results_count({"businesses": [{}, {}]}) == 2
    assert results_count({"emails": ["a"], "phones": ["b", "c"]}) == 3
    assert results_count({}) == 1
