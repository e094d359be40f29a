"""The event-stream parser against the WHATWG framing rules, fed in every possible split."""

from __future__ import annotations

import pytest

from harvester.api.sse import Event, Parser, StreamError


def parse(raw: bytes) -> list[Event]:
    return Parser().feed(raw)


def parse_bytewise(raw: bytes) -> list[Event]:
    parser = Parser()
    return [event for i in range(len(raw)) for event in parser.feed(raw[i : i + 1])]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'event: job.completed\ndata: {"a": 1}\n\n', [("job.completed", '{"a": 1}')]),
        (b"data: one\n\n", [("message", "one")]),  # no event line: the default type
        (b"data: a\ndata: b\n\n", [("message", "a\nb")]),  # multi-line data joins with LF
        (b"data:no-space\n\n", [("message", "no-space")]),
        (b"data:  two spaces\n\n", [("message", " two spaces")]),  # only one space is dropped
        (b"data\n\n", [("message", "")]),  # a field without a colon has an empty value
        (b": keep-alive\n\n", []),  # a comment dispatches nothing
        (b"event: heartbeat\n\n", []),  # no data: nothing
        (b"event: x\r\ndata: crlf\r\n\r\n", [("x", "crlf")]),
        (b"event: x\rdata: cr\r\r", [("x", "cr")]),
        (b"\xef\xbb\xbfdata: bom\n\n", [("message", "bom")]),
        (b"data: a\n\ndata: b\n\n", [("message", "a"), ("message", "b")]),
        (b"data: unfinished\n", []),  # no blank line yet: not dispatched
        (b"bogus: field\ndata: kept\n\n", [("message", "kept")]),
    ],
)
def test_framing(raw: bytes, expected: list[tuple[str, str]]) -> None:
    assert [(e.type, e.data) for e in parse(raw)] == expected
    assert [(e.type, e.data) for e in parse_bytewise(raw)] == expected


def test_retry_and_id_fields() -> None:
    parser = Parser()
    events = parser.feed(b"retry: 3000\nid: 7\ndata: x\n\nretry: soon\nid: a\0b\ndata: y\n\n")
    assert parser.retry_ms == 3000  # a non-numeric retry is ignored
    assert [e.last_id for e in events] == ["7", "7"]  # an id with NUL is ignored


def test_comments_are_counted_as_signs_of_life() -> None:
    parser = Parser()
    parser.feed(b": ping\n: ping\n")
    assert parser.comments == 2


def test_a_crlf_split_across_chunks_is_one_line_end() -> None:
    parser = Parser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []  # the LF completes the CRLF: not a blank line
    assert [(e.type, e.data) for e in parser.feed(b"\r\n")] == [("message", "a")]


def test_a_line_without_end_beyond_a_megabyte_is_refused() -> None:
    with pytest.raises(StreamError, match="longer"):
        Parser().feed(b"data: " + b"x" * (1 << 20) + b"x")


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(StreamError, match="UTF-8"):
        Parser().feed(b"data: \xff\xfe\n\n")
