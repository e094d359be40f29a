"""What the read-only commands print: ``show`` (one job), the ``status --watch`` screen and the
``--by-tag`` table.

Nothing here reads the database (``db.status`` does, and ``output`` brings the two together):
human durations (``8 d 0 h``, not ``691219 s``), rates and the backlog's ETA, the text of a frame
and the screen that draws it, all over plain values that tests can build.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO
from uuid import UUID

STATES = ("pending", "harvested", "failed", "cancelled", "not_found", "rejected", "expired")
RATE_WINDOWS_S = (60.0, 300.0)  # harvested per minute over the last minute, and over five
MIN_SPAN_S = 10.0  # a rate over a few seconds of a just-started feed is noise


def stream_state(entry: Mapping[str, Any]) -> str:
    """An account's event stream as ``status`` names it, from its ``discovery_status`` row."""
    if entry["stream_connected_at"]:
        return "connected"
    return "held, not connected" if entry["stream_held"] else "not held"


def human_duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 12 s``, ``5 h 3 min``, ``8 d 0 h``: the two largest units, whole."""
    if seconds is None or math.isnan(seconds):
        return "-"
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    if s < 10:
        return f"{sign}{s:.1f} s"
    whole = int(s)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days} d {hours} h"
    if hours:
        return f"{sign}{hours} h {minutes} min"
    if minutes:
        return f"{sign}{minutes} min {secs} s"
    return f"{sign}{secs} s"


def eta_s(pending: int, finished_per_min: float) -> float | None:
    """Seconds until the backlog is gone at this rate; None when nothing finishes."""
    if pending == 0:
        return 0.0
    if finished_per_min <= 0:
        return None
    return pending / finished_per_min * 60.0


def _at(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "-"
    delta = (now - value).total_seconds()
    when = "ago" if delta >= 0 else "from now"
    return f"{value.isoformat(timespec='seconds')} ({human_duration(abs(delta))} {when})"


@dataclass(frozen=True, slots=True)
class JobDetail:
    """One job, as ``harvester show`` prints it."""

    row: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        r = self.row
        took = None
        if r["finished_at"] is not None:
            took = (r["finished_at"] - r["enqueued_at"]).total_seconds()
        return {
            "job_id": str(r["job_id"]),
            "state": r["state"],
            "job_type": r["job_type"],
            "upstream_status": r["upstream_status"],
            "priority": r["priority"],
            "tags": json.loads(r["tags"]),
            "polls": r["polls"],
            "last_http_status": r["last_http_status"],
            "last_error": r["last_error"],
            "not_found_count": r["not_found_count"],
            "fault_count": r["fault_count"],
            "lease_owner": r["lease_owner"],
            "timings": {
                "enqueued_at": _iso(r["enqueued_at"]),
                "last_polled_at": _iso(r["last_polled_at"]),
                "next_poll_at": _iso(r["next_poll_at"]) if r["state"] == "pending" else None,
                "finished_at": _iso(r["finished_at"]),
                "completed_at": _iso(r["completed_at"]),
                "fetched_at": _iso(r["fetched_at"]),
                "enqueued_to_finished_s": took,
                "processing_time_s": r["processing_time_seconds"],
            },
            "stored": {
                "result": r["fetched_at"] is not None,
                "emails": r["emails"],
                "phones": r["phones"],
                "socials": r["socials"],
                "team_members": r["team_members"],
                "businesses": r["businesses"],
                "addresses": r["addresses"],
                "rejects": r["rejects"],
            },
            "last_change": r["last_change"],
        }

    def lines(self) -> list[str]:
        r = self.row
        d = self.as_dict()
        now = r["db_now"]
        kind = ", ".join(str(v) for v in (r["job_type"], r["upstream_status"]) if v)
        stored = d["stored"]
        out = [
            f"job:            {d['job_id']}",
            f"state:          {r['state']}" + (f" ({kind})" if kind else ""),
            f"tags:           {json.dumps(d['tags'], ensure_ascii=False) if d['tags'] else '-'}",
            f"priority:       {r['priority']}",
            f"polls spent:    {r['polls']}",
            f"last HTTP:      {r['last_http_status'] if r['last_http_status'] is not None else '-'}",
            f"last error:     {r['last_error'] or '-'}",
            f"enqueued:       {_at(r['enqueued_at'], now)}",
            f"last polled:    {_at(r['last_polled_at'], now)}",
        ]
        if r["state"] == "pending":
            out.append(f"next poll:      {_at(r['next_poll_at'], now)}")
            if r["lease_owner"]:
                out.append(f"leased by:      {r['lease_owner']} until {_at(r['lease_expires_at'], now)}")
        else:
            took = d["timings"]["enqueued_to_finished_s"]
            out.append(f"finished:       {_at(r['finished_at'], now)}, {human_duration(took)} after enqueue")
        if r["completed_at"] is not None or r["processing_time_seconds"] is not None:
            out.append(
                f"upstream:       completed {_at(r['completed_at'], now)}, "
                f"processing {human_duration(r['processing_time_seconds'])}"
            )
        out.append(
            f"stored:         emails {stored['emails']}, phones {stored['phones']}, "
            f"socials {stored['socials']}, team members {stored['team_members']}, "
            f"businesses {stored['businesses']}, addresses {stored['addresses']}"
            + ("" if stored["result"] else " (no result body)")
            + (f", rejects {stored['rejects']}" if stored["rejects"] else "")
        )
        out.append(f"last change:    {r['last_change'] if r['last_change'] is not None else '-'}")
        return out


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one ``status --watch`` frame shows."""

    jobs: dict[str, int]
    harvested: dict[float, int]  # window seconds -> harvested in it
    finished: dict[float, int]
    spans: dict[float, float] = field(default_factory=dict)  # window -> seconds of it the feed covers
    oldest_pending: tuple[UUID, float] | None = None
    limiters: list[dict[str, Any]] | None = None
    discovery: list[dict[str, Any]] | None = None
    by_tag: tuple[str, dict[str | None, dict[str, int]]] | None = None
    hidden: dict[str, str] = field(default_factory=dict)

    def per_min(self, counts: Mapping[float, int], window_s: float) -> float:
        span = max(MIN_SPAN_S, min(window_s, self.spans.get(window_s, window_s)))
        return counts.get(window_s, 0) / span * 60.0

    def rate_for_eta(self) -> float:
        """The current rate: finished per minute over the last minute, or over five when the last
        minute was quiet (a pause, a slow patch)."""
        long, short = max(RATE_WINDOWS_S), min(RATE_WINDOWS_S)
        return self.per_min(self.finished, short) or self.per_min(self.finished, long)


def frame(snap: Snapshot, *, title: str, width: int = 100) -> str:
    """The text of one screen: no trailing spaces, no line longer than ``width``."""
    short, long = min(RATE_WINDOWS_S), max(RATE_WINDOWS_S)
    pending = snap.jobs.get("pending", 0)
    rate = snap.rate_for_eta()
    lines = [title, ""]
    lines.append("jobs:   " + "  ".join(f"{s} {snap.jobs.get(s, 0)}" for s in STATES))
    lines.append(
        f"rate:   harvested {snap.per_min(snap.harvested, short):.0f}/min (last min), "
        f"{snap.per_min(snap.harvested, long):.1f}/min (last 5 min); "
        f"finished {rate:.1f}/min now"
    )
    eta = eta_s(pending, rate)
    oldest = "-"
    if snap.oldest_pending is not None:
        oldest = f"{snap.oldest_pending[0]} ({human_duration(snap.oldest_pending[1])} old)"
    lines.append(f"oldest pending: {oldest}")
    lines.append(
        f"backlog: {pending} pending, ETA "
        + (
            "done"
            if eta == 0
            else "unknown (nothing finished lately)"
            if eta is None
            else human_duration(eta)
        )
    )
    for entry in snap.limiters or []:
        window = f"{float(entry['window_s']):g} s"
        state = (
            f"paused until {entry['paused_until']} ({entry['pause_reason']})"
            if entry["paused_until"]
            else f"{entry['tokens']} available now"
        )
        lines.append(
            f"requests: {entry['in_window']} of {entry['limit']} in the last {window} "
            f"(burst {entry['burst']}), {state}; credential {entry['credential']}"
        )
    for entry in snap.discovery or []:
        stream = stream_state(entry)
        last = entry["last_pass_at"]
        last_text = "never" if last is None else f"{human_duration(_age(last))} ago"
        lines.append(
            f"stream: {stream}, events {entry['stream_events']} matched {entry['stream_matched']}; "
            f"list: passes {entry['passes']} pages {entry['pages']}, last pass {last_text}"
        )
    for part, reason in snap.hidden.items():
        lines.append(f"{part}: not shown ({reason})")
    if snap.by_tag is not None:
        key, groups = snap.by_tag
        lines.extend(["", *tag_table(key, groups)])
    return "\n".join(line[:width].rstrip() for line in lines)


def _age(at: datetime) -> float:
    return (datetime.now(at.tzinfo) - at).total_seconds()


def tag_table(key: str, groups: Mapping[str | None, Mapping[str, int]]) -> list[str]:
    """Progress per tag value: total, done, pending, harvested, other final states, done %."""
    header = (f"{key} =", "jobs", "done", "pending", "harvested", "other", "done %")
    rows = []
    for value in sorted(groups, key=lambda v: (v is None, v or "")):
        counts = groups[value]
        total = sum(counts.values())
        pend = counts.get("pending", 0)
        harv = counts.get("harvested", 0)
        done = total - pend
        rows.append(
            (
                "(no tag)" if value is None else value,
                str(total),
                str(done),
                str(pend),
                str(harv),
                str(done - harv),
                f"{100.0 * done / total:.1f}" if total else "-",
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [fmt(header), *(fmt(r) for r in rows)]


class Screen:
    """Where ``status --watch`` draws. On a terminal each frame redraws the screen in place (cursor
    home, each line cleared to its end, then everything below), cut to the terminal's size so that
    nothing scrolls, with the cursor hidden until ``close``. Anything else (a pipe, a file, a log)
    gets one frame after another, separated by a blank line, with no escape codes."""

    def __init__(self, out: TextIO, scrub: Callable[[str], str] = str) -> None:
        self.out = out
        self.scrub = scrub
        self.tty = out.isatty()
        self.shown = 0
        if self.tty:
            out.write("\x1b[?25l\x1b[2J")

    def draw(self, snap: Snapshot, title: str) -> None:
        size = shutil.get_terminal_size()
        text = self.scrub(frame(snap, title=title, width=size.columns if self.tty else 200))
        if self.tty:
            lines = text.split("\n")[: max(1, size.lines - 1)]
            self.out.write("\x1b[H" + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
        else:
            self.out.write(("\n" if self.shown else "") + text + "\n")
        self.out.flush()
        self.shown += 1

    def close(self) -> None:
        if self.tty:
            self.out.write("\x1b[?25h")
            self.out.flush()
