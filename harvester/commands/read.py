"""The commands that only read: ``status`` (also ``--watch``), ``show`` and ``export``.

Each checks its arguments before it loads the config (a bad one is exit 2 and no connection is
made) and hands over: ``output`` prints status and jobs, ``export`` streams a view.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from uuid import UUID

from harvester.commands import export, output
from harvester.commands.arguments import EXIT_OK, load_config, parse_tags
from harvester.db.export import VIEWS
from harvester.errors import UsageError


async def cmd_status(args: argparse.Namespace) -> int:
    if args.watch:
        return await watch_status(args)
    if args.interval is not None or args.count is not None:
        raise UsageError("--interval and --count go with --watch")
    cfg = load_config(args)
    await output.print_status(cfg, by_tag_key=args.by_tag, as_json=args.json)
    return EXIT_OK


async def watch_status(args: argparse.Namespace) -> int:
    """``status --watch``: a frame every ``--interval`` seconds until Ctrl-C or SIGTERM (exit 0)."""
    interval = 2.0 if args.interval is None else args.interval
    if not interval >= 0.2:
        raise UsageError("--interval: must be at least 0.2 seconds")
    if args.count is not None and args.count < 1:
        raise UsageError("--count: must be at least 1")
    if args.json:
        raise UsageError("--watch draws a screen; use status --json without --watch for JSON")
    cfg = load_config(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await output.watch_status(cfg, stop, interval=interval, count=args.count, by_tag_key=args.by_tag)
    return EXIT_OK


async def cmd_show(args: argparse.Namespace) -> int:
    try:
        job_id = UUID(args.job_id.strip())
    except ValueError:
        raise UsageError(f"show: not a UUID: {args.job_id[:80]!r}") from None
    cfg = load_config(args)
    await output.print_job(cfg, job_id, as_json=args.json)
    return EXIT_OK


async def cmd_export(args: argparse.Namespace) -> int:
    if args.view not in VIEWS:
        raise UsageError(f"export: unknown view {args.view!r} (one of: {', '.join(VIEWS)})")
    tags = parse_tags(args.tag)
    since = export.parse_since(args.since)
    cfg = load_config(args)
    await export.export_view(
        cfg, args.view, fmt=args.format, out=args.out, bom=args.bom, tags=tags, since=since
    )
    return EXIT_OK
