"""What the read commands print once ``cli`` has checked their arguments and loaded the config:
``status`` (text, or ``--json``), the ``status --watch`` loop, ``show`` and ``export``.

Each opens a small pool of its own and writes to stdout; everything printed that may hold a token
or a DSN passes through ``logs.scrub``. A role that may not read the limiter or discovery rows
still gets the queue, with the part it cannot see named, not a crash. The frames, the job detail
and the tag table are built in ``report``; the COPY in ``export``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from harvester import db, logs
from harvester.commands import export, report
from harvester.commands.report import STATES
from harvester.config import Config
from harvester.db import admin, limiter
from harvester.errors import DatabaseError, HarvesterError


async def print_status(cfg: Config, *, by_tag_key: str | None, as_json: bool) -> None:
    """``status``: jobs per state and per account, the limiter and discovery rows, recent errors."""
    pool = await db.open_pool(cfg.database, max_size=2, read_only=True)
    by_tag: list[str] | None = None
    hidden: dict[str, str] = {}
    limiter_state: list[dict[str, Any]] | None = None
    discovery: list[dict[str, Any]] | None = None
    try:
        queued = await admin.status(pool)
        by_account = await admin.jobs_by_account(pool)
        for part, read in (("limiter", limiter.describe_all), ("discovery", admin.discovery_status)):
            try:
                found = await read(pool)
            except DatabaseError as exc:
                if not isinstance(exc.__cause__, asyncpg.InsufficientPrivilegeError):
                    raise
                # a role that may not see it still gets the queue (said, not crashed)
                hidden[part] = str(exc.__cause__)
                continue
            if part == "limiter":
                limiter_state = found
            else:
                discovery = found
        if by_tag_key is not None:
            by_tag = report.tag_table(by_tag_key, await report.tag_groups(pool, by_tag_key))
    finally:
        await pool.close()
    jobs = {state: queued.counts.get(state, 0) for state in STATES}
    accounts = account_report(by_account, cfg.account_names, limiter_state, discovery)
    waiting = {
        name: entry["jobs"].get("pending", 0) for name, entry in accounts.items() if not entry["configured"]
    }
    out: dict[str, Any] = {
        "jobs": jobs,
        "accounts": accounts,
        "waiting_for_unknown_account": {name: n for name, n in waiting.items() if n},
        "oldest_pending_age_s": queued.oldest_pending_age_s,
        "polls_spent": sum(queued.polls.values()),
        "polls_by_state": queued.polls,
        "recent_errors": queued.recent_errors,
        "limiter": limiter_state,
        "discovery": discovery,
    }
    if hidden:
        out["not_shown"] = hidden
    if by_tag is not None:
        out["by_tag"] = {"key": by_tag_key, "table": by_tag}
    if as_json:
        print(logs.scrub(json.dumps(out, indent=2, default=str)))
        return
    print("jobs:")
    for state in STATES:
        print(f"  {state:<10} {jobs[state]}")
    print(f"oldest pending: {report.human_duration(queued.oldest_pending_age_s)}")
    print(f"polls spent:    {out['polls_spent']}")
    for name, entry in accounts.items():
        counts = " ".join(f"{state}={n}" for state, n in entry["jobs"].items() if n)
        limiter_entry = entry.get("limiter") or {}
        extra = ""
        if limiter_entry:
            extra = f" in_window={limiter_entry['in_window']}/{limiter_entry['limit']}"
            if limiter_entry.get("paused_until"):
                extra += f" paused_until={limiter_entry['paused_until']}"
        where = "" if entry["configured"] else " (not configured here: its jobs wait)"
        print(logs.scrub(f"account {name}:{where} {counts or 'no jobs'}{extra}"))
    for name, count in out["waiting_for_unknown_account"].items():
        print(f"waiting:        {count} pending job(s) for unknown account {name!r}")
    for entry in limiter_state or []:
        print(logs.scrub("limiter:        " + ", ".join(f"{k}={v}" for k, v in entry.items())))
    for entry in discovery or []:
        stream = report.stream_state(entry)
        print(
            logs.scrub(
                f"discovery:      account={entry.get('account', entry['credential'])} "
                f"list passes={entry['passes']} "
                f"pages={entry['pages']} last pass={entry['last_pass_at'] or '-'}; event stream {stream}, "
                f"events={entry['stream_events']} matched={entry['stream_matched']}"
            )
        )
    for part, reason in hidden.items():
        print(logs.scrub(f"{part + ':':<15} not shown ({reason})"))
    if queued.recent_errors:
        print("recent errors:")
        for err in queued.recent_errors:
            print(
                logs.scrub(
                    f"  {err['at']} {err['job_id']} {err['state']} http={err['http_status']} {err['error']}"
                )
            )
    for line in by_tag or []:
        print(logs.scrub(line))


def account_report(
    by_account: dict[str, dict[str, int]],
    configured: Sequence[str],
    limiter_state: list[dict[str, Any]] | None,
    discovery: list[dict[str, Any]] | None,
) -> dict[str, dict[str, Any]]:
    """Per account: its jobs per state, whether this configuration names it, its limiter and
    discovery rows (what the role may see of them)."""
    names = sorted({*configured, *by_account})
    limiters = {entry.get("account"): entry for entry in limiter_state or []}
    finds = {entry.get("account"): entry for entry in discovery or []}
    return {
        name: {
            "configured": name in configured,
            "jobs": {state: by_account.get(name, {}).get(state, 0) for state in STATES},
            "limiter": limiters.get(name),
            "discovery": finds.get(name),
        }
        for name in names
    }


async def watch_status(
    cfg: Config, stop: asyncio.Event, *, interval: float, count: int | None, by_tag_key: str | None
) -> None:
    """``status --watch``: a frame every ``interval`` seconds until ``stop`` is set (Ctrl-C or
    SIGTERM, which ``cli`` wires to it) or ``count`` frames are drawn."""
    pool = await db.open_pool(cfg.database, max_size=2, read_only=True)
    screen = report.Screen(sys.stdout, scrub=logs.scrub)
    try:
        while not stop.is_set():
            snap = await report.snapshot(pool, by_tag_key)
            title = (
                f"harvester status  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  "
                f"every {report.human_duration(interval)}, Ctrl-C to stop"
            )
            screen.draw(snap, title)
            if count is not None and screen.shown >= count:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        await pool.close()
        screen.close()


async def print_job(cfg: Config, job_id: UUID, *, as_json: bool) -> None:
    """``show``: one job's state, polls, last HTTP status and error, timings and stored rows."""
    pool = await db.open_pool(cfg.database, max_size=1, read_only=True)
    try:
        detail = await report.job_detail(pool, job_id)
    finally:
        await pool.close()
    if detail is None:
        raise HarvesterError(f"show: no job {job_id} in harvester.jobs (enqueue it first)")
    if as_json:
        print(logs.scrub(json.dumps(detail.as_dict(), indent=2, ensure_ascii=False)))
    else:
        for line in detail.lines():
            print(logs.scrub(line))


async def export_view(
    cfg: Config,
    view: str,
    *,
    fmt: str,
    out: str | None,
    bom: bool,
    tags: dict[str, str],
    since: export.Since,
) -> None:
    """``export``: the view streamed to ``out`` (replaced only when complete) or to stdout, and a
    one-line JSON summary (on stderr when the rows went to stdout)."""
    pool = await db.open_pool(cfg.database, max_size=1, read_only=True)
    target = None
    sink = None
    try:
        target = export.FileTarget(Path(out)) if out else None
        sink = export.StreamSink(target.stream if target is not None else sys.stdout.buffer)
        if bom and fmt == "csv":
            sink.stream.write(export.BOM)
        done = await export.export(pool, view, fmt=fmt, sink=sink, tags=tags, since=since)
        sink.stream.flush()
    except BaseException as exc:
        if target is not None:
            target.abandon()
        if sink is not None and (sink.closed or isinstance(exc, BrokenPipeError)):
            # `export ... | head`: the reader has what it wanted.
            silence_stdout(sys.stdout.fileno())
            return
        raise
    finally:
        await pool.close()
    if target is not None:
        target.commit()
    summary = json.dumps(done.as_dict())
    print(summary, file=sys.stdout if target is not None else sys.stderr)


def stdout_gone() -> bool:
    """Has the reader of our output gone away (``harvester status | head -1``)? A pipe with no
    reader polls as an error (a broken pipe from the database's socket leaves stdout alone).
    Then stdout is silenced."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):
        return True  # no stdout left at all
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    if not any(events & select.POLLERR for _, events in poller.poll(0)):
        return False
    silence_stdout(fd)
    return True


def silence_stdout(fd: int) -> None:
    """Point stdout at /dev/null: its reader is gone, and the interpreter's last flush of it
    would fail again on the way out."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
