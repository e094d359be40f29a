"""The commands that change jobs: ``enqueue``, ``import``, ``reprocess`` and ``requeue``.

Each checks its arguments before it loads the config or opens a pool (a bad ID is exit 2 and
nothing is written), does its work on a small pool of its own, and prints one line of JSON
saying what it did.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harvester import config, db
from harvester.commands import imports
from harvester.commands.arguments import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    load_config,
    parse_job_ids,
    parse_tags,
    read_lines,
)
from harvester.db import admin, bulk
from harvester.errors import UsageError


async def cmd_enqueue(args: argparse.Namespace) -> int:
    items = [(f"argument {n}", text) for n, text in enumerate(args.ids, 1)]
    if args.file:
        label = "stdin" if args.file == "-" else args.file
        items += [(f"{label} line {n}", text) for n, text in enumerate(read_lines(args.file), 1)]
    ids, problems = parse_job_ids(items)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"nothing enqueued: {len(problems)} invalid job id(s)", file=sys.stderr)
        return EXIT_USAGE
    if not ids and not args.file:
        raise UsageError("no job ids given (pass IDs, or --file F, or --file - for stdin)")
    if not -32768 <= args.priority <= 32767:
        raise UsageError("--priority: must fit a smallint (-32768..32767)")
    tags = parse_tags(args.tag)
    if not config.ACCOUNT_NAME.match(args.account):
        raise UsageError(
            f"--account: not an account name (lower-case letters, digits, _ and -): {args.account[:80]!r}"
        )
    cfg = load_config(args)
    if not ids:  # an empty file or stdin (a producer query that found nothing) is not an error
        print(json.dumps({"enqueued": 0, "duplicates": 0}))
        return EXIT_OK
    pool = await db.open_pool(cfg.database, max_size=2)
    try:
        added = await admin.enqueue(pool, ids, priority=args.priority, tags=tags, account=args.account)
    finally:
        await pool.close()
    print(json.dumps({"enqueued": added, "duplicates": len(ids) - added}))
    return EXIT_OK


async def cmd_import(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    pool = await db.open_pool(cfg.database, max_size=2)
    try:
        report = await imports.import_paths(
            pool, [Path(p) for p in args.paths], cfg.normalize.default_region or None
        )
    finally:
        await pool.close()
    for problem in report.problems:
        print(f"{problem[0]}:{problem[1]}: {problem[2]}", file=sys.stderr)
    print(json.dumps({"stored": report.stored, "rejected": report.rejected, "skipped": report.skipped}))
    return EXIT_OK if not report.problems else EXIT_FAILURE


async def cmd_reprocess(args: argparse.Namespace) -> int:
    ids, problems = parse_job_ids((f"argument {n}", t) for n, t in enumerate(args.ids, 1))
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    if not args.all and not ids:
        raise UsageError("reprocess: pass --all or one or more job ids")
    cfg = load_config(args)
    pool = await db.open_pool(cfg.database, max_size=2)
    try:
        report = await bulk.reprocess(pool, None if args.all else ids, cfg.normalize.default_region or None)
    finally:
        await pool.close()
    print(json.dumps(report.as_dict()))
    return EXIT_OK


async def cmd_requeue(args: argparse.Namespace) -> int:
    ids, problems = parse_job_ids((f"argument {n}", t) for n, t in enumerate(args.ids, 1))
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    if args.state == "pending":
        raise UsageError("--state: pending jobs are already queued")
    if not ids and not args.state:
        raise UsageError("requeue: pass --state S and/or job ids")
    cfg = load_config(args)
    pool = await db.open_pool(cfg.database, max_size=2)
    try:
        count = await admin.requeue(pool, ids, args.state)
    finally:
        await pool.close()
    print(json.dumps({"requeued": count}))
    return EXIT_OK
