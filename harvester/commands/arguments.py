"""What every command shares before it acts: the exit codes, job IDs and tags read from arguments
and files, and the configuration loaded with its secrets registered for redaction.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error (one line, no traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from harvester import config, logs
from harvester.errors import UsageError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def parse_job_ids(items: Iterable[tuple[str, str]]) -> tuple[list[UUID], list[str]]:
    """(where, text) pairs → unique UUIDs in order, and one message per bad entry."""
    ids: list[UUID] = []
    seen: set[UUID] = set()
    problems: list[str] = []
    for where, text in items:
        value = text.strip()
        if not value or value.startswith("#"):
            continue
        try:
            job_id = UUID(value)
        except ValueError:
            problems.append(f"{where}: not a UUID: {value[:80]!r}")
            continue
        if job_id not in seen:
            seen.add(job_id)
            ids.append(job_id)
    return ids, problems


def parse_tags(pairs: Sequence[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--tag: expected KEY=VALUE, got {pair!r}")
        tags[key.strip()] = value
    return tags


def read_lines(source: str) -> list[str]:
    """The lines of ``--file``: a path, or ``-`` for stdin."""
    if source == "-":
        return sys.stdin.read().splitlines()
    try:
        return Path(source).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--file: cannot read {source}: {exc}") from None


def load_config(args: argparse.Namespace, **overrides: Any) -> config.Config:
    """The configuration (``--config``, the environment, ``overrides``), with logging set up and
    every token registered so that no output shows it."""
    cfg = config.load(getattr(args, "config", None), overrides=overrides)
    logs.setup(cfg.log.format, cfg.log.level)
    if cfg.api.token:
        logs.register_secret(cfg.api.token.reveal())
    for account in cfg.accounts:
        if account.token:
            logs.register_secret(account.token.reveal())
    return cfg
