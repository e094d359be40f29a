"""The one structlog set-up: JSON lines (or console) on stdout, with secrets redacted and repeats
rate limited.

Every event passes through ``redact`` last before rendering, so a token that slipped into a value, an
exception message or a formatted traceback is replaced by ``***`` before anything is written.

A warning or error that repeats (same event, level and identifying fields, whatever its changing
``error`` text) is written once, then held back for a window that doubles while the repeats go on
(60 s, 120 s, ... capped at 300 s); the first repeat after a window is written with
``suppressed=N``, the number held back since the last line. An hour of a database outage retried
twice a second is so about fifteen lines per event instead of 7,200. Info and debug lines
(``job_harvested``) are never held back.
"""

from __future__ import annotations

import atexit
import logging
import sys
import time
from collections.abc import Callable, Hashable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import structlog

_secrets: set[str] = set()


def secret_parts(value: str) -> set[str]:
    """A token, each colon-separated part of it long enough to be worth hiding, and the forms a
    URL gives them (the event stream takes the token in its query string)."""
    if not value:
        return set()
    parts = {value, *(part for part in value.split(":") if len(part) >= 6)}
    return parts | {quote(p, safe="") for p in parts} | {quote_plus(p, safe="") for p in parts}


def register_secret(value: str) -> None:
    """Redact ``value`` (and each colon-separated part of a SpiderIQ token) from all output."""
    _secrets.update(secret_parts(value))


def _replace(text: str, secrets: set[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


def scrub(text: str) -> str:
    return _replace(text, _secrets)


def scrubber(token: str) -> Callable[[str], str]:
    """A scrub that also knows ``token``, whether or not it was registered (libraries, tests)."""
    own = secret_parts(token)
    return lambda text: _replace(text, own | _secrets)


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(v) for v in value]
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if not _secrets:
        return event
    return {key: _scrub_value(value) for key, value in event.items()}


# Fields that tell one warning from another of the same event; the rest (error text, retry_in_s,
# pause_s, counts) is detail that may change from one repeat to the next.
IDENTITY_FIELDS = ("logger", "job_id", "endpoint", "http_status", "command")
LIMITED_LEVELS = frozenset({"warning", "error", "critical"})
MAX_KEYS = 10_000


@dataclass(slots=True)
class _Run:
    """One kind of warning being held back: since when, for how long, and how many so far."""

    label: dict[str, str]
    written_at: float
    window_s: float
    last_at: float
    suppressed: int = 0


class RepeatLimiter:
    """Decides which repeats of a warning are written; pure apart from the injected clock."""

    def __init__(
        self, window_s: float = 60.0, max_window_s: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_s = window_s
        self.max_window_s = max_window_s
        self.clock = clock
        self._runs: dict[Hashable, _Run] = {}

    def check(self, key: Hashable, label: dict[str, str] | None = None) -> int | None:
        """None: hold this occurrence back. Otherwise write it, with this many held back before.

        ``label`` is what a last summary line (``held_back``) says about the key.
        """
        now = self.clock()
        run = self._runs.get(key)
        if run is None:
            if len(self._runs) >= MAX_KEYS:
                self._forget_oldest()
            self._runs[key] = _Run(label=label or {}, written_at=now, window_s=self.window_s, last_at=now)
            return 0
        quiet = now - run.last_at > run.window_s
        run.last_at = now
        if now - run.written_at < run.window_s and not quiet:
            run.suppressed += 1
            return None
        held = run.suppressed
        # Still repeating: the next window is longer. Quiet for a whole window: start afresh.
        run.window_s = self.window_s if quiet else min(run.window_s * 2, self.max_window_s)
        run.written_at, run.suppressed = now, 0
        return held

    def held_back(self) -> list[tuple[dict[str, str], int]]:
        """Labels of keys with repeats not yet reported, and how many; clears the counts."""
        pending = [(run.label, run.suppressed) for run in self._runs.values() if run.suppressed]
        for run in self._runs.values():
            run.suppressed = 0
        return pending

    def _forget_oldest(self) -> None:
        for key in sorted(self._runs, key=lambda k: self._runs[k].last_at)[: MAX_KEYS // 10]:
            del self._runs[key]


def _identity(event: MutableMapping[str, Any]) -> dict[str, str]:
    names = ("event", "level", *IDENTITY_FIELDS)
    return {name: str(event[name]) for name in names if name in event}


class LimitRepeats:
    """structlog processor: drops held-back repeats of warnings, counts them on the next line."""

    def __init__(self, limiter: RepeatLimiter) -> None:
        self.limiter = limiter

    def __call__(self, _: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        level = str(event.get("level", method))
        if level not in LIMITED_LEVELS or event.pop("_summary", False):
            return event
        label = _identity(event)
        held = self.limiter.check(tuple(label.items()), label)
        if held is None:
            raise structlog.DropEvent
        if held:
            event["suppressed"] = held
        return event


class _LimitRecords(logging.Filter):
    """The same for library records (the database driver, aiohttp): keyed by logger, level and
    message template."""

    def __init__(self, limiter: RepeatLimiter) -> None:
        super().__init__()
        self.limiter = limiter

    def filter(self, record: logging.LogRecord) -> bool:
        label = {"event": str(record.msg), "level": record.levelname.lower(), "logger": record.name}
        held = self.limiter.check(("record", *label.items()), label)
        if held is None:
            return False
        if held:
            record.harvester_suppressed = held
        return True


def _suppressed_from_record(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    held = getattr(event.get("_record"), "harvester_suppressed", 0)
    if held:
        event["suppressed"] = held
    return event


_limiter = RepeatLimiter()
_flush_registered = False


def flush_repeats() -> None:
    """One line per warning whose last repeats were held back; run at exit, so none go uncounted."""
    log = structlog.get_logger()
    try:
        for label, held in _limiter.held_back():
            fields = dict(label)
            event, level = fields.pop("event", "repeats"), fields.pop("level", "warning")
            method = level if level in LIMITED_LEVELS else "warning"
            getattr(log, method)(event, suppressed=held, _summary=True, **fields)
    except (ValueError, OSError):  # the stream is already closed: nothing left to tell
        pass


def setup(
    fmt: str = "json", level: str = "info", stream: Any = None, clock: Callable[[], float] | None = None
) -> None:
    """Configure structlog once for the process. ``clock`` (monotonic seconds) is for tests."""
    global _limiter, _flush_registered
    _limiter = RepeatLimiter(clock=clock or time.monotonic)
    if not _flush_registered:
        atexit.register(flush_repeats)
        _flush_registered = True
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            LimitRepeats(_limiter),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(renderer, stream or sys.stdout)


def _route_stdlib(renderer: Any, stream: Any) -> None:
    """Libraries (the database driver, aiohttp) log through ``logging``: same format, same redaction.

    Only warnings and above: their debug chatter is not ours to publish.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _suppressed_from_record,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "harvester", False)]:
        root.removeHandler(old)
    handler.addFilter(_LimitRecords(_limiter))
    handler.harvester = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


def get(name: str | None = None) -> Any:
    return structlog.get_logger(name) if name else structlog.get_logger()
