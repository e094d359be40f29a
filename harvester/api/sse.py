"""Server-sent events: the WHATWG ``text/event-stream`` framing as a pure, incremental parser.

``Parser.feed(chunk)`` takes bytes as they arrive (split anywhere, even inside a line or a CRLF) and
returns the events completed by them. The rules of the HTML standard's "interpreting an event
stream": lines end in CRLF, LF or CR; a leading BOM is dropped; a line starting with ``:`` is a
comment; ``field: value`` (one space after the colon is dropped, a line without a colon is a field
with an empty value); ``data`` lines accumulate joined by ``\\n``; ``event`` names the type (default
``message``); ``id`` sets the last event id unless it holds NUL; ``retry`` with only digits sets the
reconnection time; a blank line dispatches, and an event with no data is dropped. Comments are
counted so a caller can treat them as signs of life.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE = 1 << 20  # a line longer than this is not an event stream


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    data: str
    last_id: str


class StreamError(ValueError):
    """The bytes are not an event stream (a line longer than ``MAX_LINE``, not UTF-8)."""


class Parser:
    def __init__(self) -> None:
        self._buffer = b""
        self._started = False
        self._skip_lf = False  # the last chunk ended in CR: a following LF belongs to it
        self._data: list[str] = []
        self._type = ""
        self.last_id = ""
        self.retry_ms: int | None = None
        self.comments = 0

    def feed(self, chunk: bytes) -> list[Event]:
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = False
        self._buffer += chunk
        events: list[Event] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                if len(self._buffer) > MAX_LINE:
                    raise StreamError("line longer than 1 MiB")
                return events
            end, width = cut
            ends_in_cr = width == 1 and self._buffer[end : end + 1] == b"\r"
            raw, self._buffer = self._buffer[:end], self._buffer[end + width :]
            if ends_in_cr and not self._buffer:
                self._skip_lf = True  # a CR at the end of what arrived: an LF may follow
            event = self._line(raw)
            if event is not None:
                events.append(event)

    def _line(self, raw: bytes) -> Event | None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StreamError(f"not UTF-8: {exc}") from None
        if not self._started:
            self._started = True
            line = line.removeprefix("\ufeff")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\0" not in value:
                self.last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, kind = self._data, self._type
        self._data, self._type = [], ""
        if not data:
            return None
        return Event(type=kind or "message", data="\n".join(data), last_id=self.last_id)


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Where the first line ends and how wide its terminator is (CRLF 2, LF or CR 1)."""
    lf = buffer.find(b"\n")
    cr = buffer.find(b"\r")
    if cr == -1 and lf == -1:
        return None
    if cr == -1 or (lf != -1 and lf < cr):
        return lf, 1
    if cr + 1 < len(buffer):
        return (cr, 2) if buffer[cr + 1 : cr + 2] == b"\n" else (cr, 1)
    return cr, 1  # a CR at the end of what has arrived: an LF may follow in the next chunk
