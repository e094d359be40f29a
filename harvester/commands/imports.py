"""``harvester import``: store result bodies from files, without calling the API.

A file holds either one JSON body (it parses as a whole) or JSON Lines (one body per line,
blank lines skipped). Directories contribute their ``*.json`` and ``*.jsonl`` files, sorted. Each
body goes through ``store.store_result`` without a fence, so a bad one is rejected into
``harvester.rejects`` and reported with its file and line while the rest is still imported; an
unreadable file is reported too. Only an unreachable database stops the import (DatabaseError).

A body is read by its own ``status`` the way the daemon reads a 200 answer
(``classify.classify_body``): one whose ``status`` says ``failed``/``cancelled`` ends the job in
that state with its ``error_message``, as a 410 would; one still ``queued``/``processing``/``running``
is not a result, so it is reported and nothing is stored for it. The body is parsed once, by
``classify.read_body``, and the parsed object goes to the store with the bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

from harvester.api import classify
from harvester.api.outcomes import Completed, Document, Gone, Pending
from harvester.db import bulk, store

PATTERNS = ("*.json", "*.jsonl")
BATCH = 200  # bodies per transaction: set-based writes, few round trips


@dataclass(frozen=True, slots=True)
class ImportReport:
    stored: int = 0
    rejected: int = 0
    problems: list[tuple[str, int, str]] = field(default_factory=list)
    skipped: int = 0  # bodies of jobs that had not finished


def gone_job_id(outcome: Completed | Pending | Gone) -> UUID | None:
    """The job a failed/cancelled body is about; None when it is not one (or names no job)."""
    if not isinstance(outcome, Gone) or not isinstance(outcome.doc, dict):
        return None
    value = outcome.doc.get("job_id")
    try:
        return UUID(value) if isinstance(value, str) else None
    except ValueError:
        return None


def expand(paths: Sequence[Path]) -> Iterator[Path]:
    """Files as given; directories as their *.json / *.jsonl files, sorted by name."""
    for path in paths:
        if path.is_dir():
            found = {p for pattern in PATTERNS for p in path.glob(pattern) if p.is_file()}
            yield from sorted(found)
        else:
            yield path


def parses(chunk: bytes) -> tuple[bool, object]:
    try:
        return True, json.loads(chunk.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False, None


def bodies(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(line number, body bytes): the whole file when it is one JSON value, else each line.

    A file that does not parse is JSON Lines only if its first non-blank line parses on its own;
    otherwise it is one broken body (a pretty-printed body with a typo is one reject, not fifty).
    """
    whole, _ = parses(data)
    lines = data.split(b"\n")
    first = next((line for line in lines if line.strip()), b"")
    if whole or not parses(first)[0]:
        if data.strip():
            yield 1, data
        return
    for number, line in enumerate(lines, 1):
        line = line.removesuffix(b"\r")
        if line.strip():
            yield number, line


async def import_paths(pool: store.Target, paths: Sequence[Path], region: str | None = None) -> ImportReport:
    stored = rejected = skipped = 0
    problems: list[tuple[str, int, str]] = []
    for path in expand(paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append((str(path), 0, f"cannot read: {exc.strerror or exc}"))
            continue
        if not data.strip():
            problems.append((str(path), 0, "empty file"))
            continue
        numbered = list(bodies(data))
        for start in range(0, len(numbered), BATCH):
            chunk = numbered[start : start + BATCH]
            completed: list[tuple[int, bytes, Document]] = []
            for line, raw in chunk:
                doc = classify.read_body(raw)
                verdict = classify.classify_body(raw, doc, http_status=None)
                job_id = gone_job_id(verdict)
                if isinstance(verdict, Pending):
                    skipped += 1
                    problems.append(
                        (
                            str(path),
                            line,
                            f"job not finished (status {verdict.upstream_status!r}): nothing stored",
                        )
                    )
                elif job_id is not None:
                    await store.store_failure(pool, raw, doc, job_id=job_id, http_status=None, polls_spent=0)
                    stored += 1
                else:
                    completed.append((line, raw, doc))
            outcomes = await bulk.store_results(pool, [(raw, doc) for _, raw, doc in completed], region)
            for (line, _, _), outcome in zip(completed, outcomes, strict=True):
                if outcome.kind == "harvested":
                    stored += 1
                else:
                    rejected += 1
                    problems.append((str(path), line, outcome.reason or outcome.kind))
    return ImportReport(stored=stored, rejected=rejected, problems=problems, skipped=skipped)
