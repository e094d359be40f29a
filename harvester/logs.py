"""The one structlog set-up: JSON lines (or console) on stdout, with secrets redacted.

Every event passes through ``redact`` last before rendering, so a token that slipped into a value, an
exception message or a formatted traceback is replaced by ``***`` before anything is written.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

_secrets: set[str] = set()


def secret_parts(value: str) -> set[str]:
    """A token and each colon-separated part of it long enough to be worth hiding."""
    if not value:
        return set()
    return {value, *(part for part in value.split(":") if len(part) >= 6)}


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


def setup(fmt: str = "json", level: str = "info", stream: Any = None) -> None:
    """Configure structlog once for the process."""
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(renderer, stream or sys.stdout)


def _route_stdlib(renderer: Any, stream: Any) -> None:
    """Libraries (asyncpg, aiohttp) log through ``logging``: same format, same redaction.

    Only warnings and above: their debug chatter is not ours to publish.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
    ))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "harvester", False)]:
        root.removeHandler(old)
    handler.harvester = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


def get(name: str | None = None) -> Any:
    return structlog.get_logger(name) if name else structlog.get_logger()
