"""What ``status`` (text, or ``--json``), the ``status --watch`` loop and ``show`` print once
``read`` has checked their arguments and loaded the config; and what becomes of stdout when its
reader goes away.

Each opens a small pool of its own on ``database.read_dsn`` and writes to stdout; everything
printed that may hold a token or a DSN passes through ``logs.scrub``. A role that may not read the
limiter or discovery rows still gets the queue, with the part it cannot see named, not a crash.
The reads are ``db.status``'s (and ``db.admin``'s and the limiter's own); the frames, the job detail
and the tag table are built in ``report``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from uuid import UUID

from harvester import db, logs
from harvester.commands import report
from harvester.commands.report import RATE_WINDOWS_S, STATES
from harvester.config import Config
from harvester.db import admin, limiter
from harvester.db import status as reads
from harvester.db.pool import privilege_refused
from harvester.errors import DatabaseError, HarvesterError

Part = Callable[[db.Pool], Awaitable[list[dict[str, Any]]]]


async def print_status(cfg: Config, *, by_tag_key: str | None, as_json: bool) -> None:
    """``status``: jobs per state and per account, the limiter and discovery rows, recent errors."""
    pool = await db.open_pool(cfg.database, max_size=2, read_only=True)
    by_tag: list[str] | None = None
    hidden: dict[str, str] = {}
    try:
        queued = await admin.status(pool)
        by_account = await admin.jobs_by_account(pool)
        limiter_state = await readable("limiter", limiter.describe_all, pool, hidden)
        discovery = await readable("discovery", admin.discovery_status, pool, hidden)
        if by_tag_key is not None:
            by_tag = report.tag_table(by_tag_key, await reads.tag_groups(pool, by_tag_key))
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


async def readable(
    part: str, read: Part, pool: db.Pool, hidden: dict[str, str]
) -> list[dict[str, Any]] | None:
    """A part a role may not be allowed to read (the limiter, discovery): None, and the reason
    in ``hidden``, so that the rest is still shown (said, not crashed)."""
    try:
        return await read(pool)
    except DatabaseError as exc:
        if not privilege_refused(exc.__cause__):
            raise
        hidden[part] = str(exc.__cause__)
        return None


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
    SIGTERM, which ``read`` wires to it) or ``count`` frames are drawn."""
    pool = await db.open_pool(cfg.database, max_size=2, read_only=True)
    screen = report.Screen(sys.stdout, scrub=logs.scrub)
    try:
        while not stop.is_set():
            snap = await snapshot(pool, by_tag_key)
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


async def snapshot(pool: db.Pool, by_tag: str | None = None) -> report.Snapshot:
    """What one ``status --watch`` frame shows, read now."""
    hidden: dict[str, str] = {}
    queued = await admin.status(pool, recent=0)
    windows, oldest = await reads.recent(pool, RATE_WINDOWS_S)
    groups = await reads.tag_groups(pool, by_tag) if by_tag is not None else {}
    limiters = await readable("limiter", limiter.describe_all, pool, hidden)
    discovery = await readable("discovery", admin.discovery_status, pool, hidden)
    return report.Snapshot(
        jobs=dict(queued.counts),
        harvested={w.window_s: w.harvested for w in windows},
        finished={w.window_s: w.finished for w in windows},
        spans={w.window_s: w.span_s for w in windows if w.span_s is not None},
        oldest_pending=oldest,
        limiters=limiters,
        discovery=discovery,
        by_tag=None if by_tag is None else (by_tag, groups),
        hidden=hidden,
    )


async def print_job(cfg: Config, job_id: UUID, *, as_json: bool) -> None:
    """``show``: one job's state, polls, last HTTP status and error, timings and stored rows."""
    pool = await db.open_pool(cfg.database, max_size=1, read_only=True)
    try:
        row = await reads.job_detail(pool, job_id)
    finally:
        await pool.close()
    if row is None:
        raise HarvesterError(f"show: no job {job_id} in harvester.jobs (enqueue it first)")
    detail = report.JobDetail(row)
    if as_json:
        print(logs.scrub(json.dumps(detail.as_dict(), indent=2, ensure_ascii=False)))
    else:
        for line in detail.lines():
            print(logs.scrub(line))


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
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)
