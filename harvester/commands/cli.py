"""Command line: arguments, signals and ``asyncio.run``; each command checks its arguments here,
loads the config and hands over. What ``status``, ``show`` and ``export`` print is ``cli_output``.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error (one line, no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import typing
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from harvester import __version__, config, logs
from harvester.errors import ConfigError, HarvesterError, MigrationHistoryError, UsageError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
STATES = ("pending", "harvested", "failed", "cancelled", "not_found", "rejected", "expired")


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


def _read_lines(source: str) -> list[str]:
    if source == "-":
        return sys.stdin.read().splitlines()
    try:
        return Path(source).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--file: cannot read {source}: {exc}") from None


def load_config(args: argparse.Namespace, **overrides: Any) -> config.Config:
    cfg = config.load(getattr(args, "config", None), overrides=overrides)
    logs.setup(cfg.log.format, cfg.log.level)
    if cfg.api.token:
        logs.register_secret(cfg.api.token.reveal())
    for account in cfg.accounts:
        if account.token:
            logs.register_secret(account.token.reveal())
    return cfg


# ---------------------------------------------------------------- commands


async def cmd_migrate(args: argparse.Namespace) -> int:
    import asyncpg

    from harvester.db import DB_OR_SQL_ERRORS, describe_dsn, migrate

    cfg = load_config(args)
    try:
        conn = await asyncpg.connect(cfg.database.direct_dsn, timeout=cfg.database.connect_timeout_s)
    except DB_OR_SQL_ERRORS as exc:
        raise HarvesterError(f"cannot connect to {describe_dsn(cfg.database.direct_dsn)}: {exc}") from exc
    try:
        applied = await migrate.apply(conn)
    finally:
        await conn.close()
    logs.get().info("migrations_applied", versions=applied, count=len(applied))
    return EXIT_OK


async def cmd_enqueue(args: argparse.Namespace) -> int:
    from harvester import db
    from harvester.db import admin

    items = [(f"argument {n}", text) for n, text in enumerate(args.ids, 1)]
    if args.file:
        label = "stdin" if args.file == "-" else args.file
        items += [(f"{label} line {n}", text) for n, text in enumerate(_read_lines(args.file), 1)]
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


async def cmd_status(args: argparse.Namespace) -> int:
    from harvester.commands import output as cli_output

    if args.watch:
        return await watch_status(args)
    if args.interval is not None or args.count is not None:
        raise UsageError("--interval and --count go with --watch")
    cfg = load_config(args)
    await cli_output.print_status(cfg, by_tag_key=args.by_tag, as_json=args.json)
    return EXIT_OK


async def watch_status(args: argparse.Namespace) -> int:
    """``status --watch``: a frame every ``--interval`` seconds until Ctrl-C or SIGTERM (exit 0)."""
    from harvester.commands import output as cli_output

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
    await cli_output.watch_status(cfg, stop, interval=interval, count=args.count, by_tag_key=args.by_tag)
    return EXIT_OK


async def cmd_show(args: argparse.Namespace) -> int:
    from harvester.commands import output as cli_output

    try:
        job_id = UUID(args.job_id.strip())
    except ValueError:
        raise UsageError(f"show: not a UUID: {args.job_id[:80]!r}") from None
    cfg = load_config(args)
    await cli_output.print_job(cfg, job_id, as_json=args.json)
    return EXIT_OK


async def cmd_export(args: argparse.Namespace) -> int:
    from harvester.commands import export
    from harvester.commands import output as cli_output

    if args.view not in export.VIEWS:
        raise UsageError(f"export: unknown view {args.view!r} (one of: {', '.join(export.VIEWS)})")
    tags = parse_tags(args.tag)
    since = export.parse_since(args.since)
    cfg = load_config(args)
    await cli_output.export_view(
        cfg, args.view, fmt=args.format, out=args.out, bom=args.bom, tags=tags, since=since
    )
    return EXIT_OK


async def cmd_import(args: argparse.Namespace) -> int:
    from harvester import db
    from harvester.commands import imports

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
    from harvester import db
    from harvester.db import bulk

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
    print(json.dumps(report.as_dict() if hasattr(report, "as_dict") else vars_of(report)))
    return EXIT_OK


def vars_of(value: Any) -> dict[str, Any]:
    slots = getattr(value, "__slots__", ())
    return {name: getattr(value, name) for name in slots} or dict(vars(value))


async def cmd_requeue(args: argparse.Namespace) -> int:
    from harvester import db
    from harvester.db import admin

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


async def cmd_run(args: argparse.Namespace) -> int:
    from harvester.daemon import run as daemon

    if args.max_seconds is not None and not args.max_seconds > 0:
        raise UsageError("--max-seconds: must be a positive number of seconds")
    overrides = {"speed": args.speed, "database.migrate_on_start": True if args.migrate else None}
    cfg = load_config(args, **overrides)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = Signals(loop, stop, cfg.worker.shutdown_grace_s)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signals.received, sig)
    reload = daemon.Reload()  # SIGHUP: re-read every account's token
    loop.add_signal_handler(signal.SIGHUP, reload.request)
    return await daemon.run(cfg, stop, drain=args.drain, max_seconds=args.max_seconds, reload=reload)


class Signals:
    """SIGTERM/SIGINT: the first stops the daemon gracefully, a second exits at once.

    A graceful stop has ``shutdown_grace_s`` for requests in flight and then hands leases back; if
    anything still holds the process past that plus ``OVERRUN_S`` (a hung connection, a library that
    ignores cancellation), it exits anyway: supervisors SIGKILL soon after their own stop timeout,
    and a job whose lease was not handed back is only taken over when the lease runs out.
    """

    OVERRUN_S = 0.9

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event, grace_s: float) -> None:
        self.loop = loop
        self.stop = stop
        self.grace_s = grace_s
        self.count = 0

    def received(self, signum: int) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.count > 1:
            self._exit_now("second_signal", 128 + signum, signal=name)
        logs.get("harvester").info("stop_requested", signal=name, grace_s=self.grace_s)
        self.stop.set()
        self.loop.call_later(self.grace_s + self.OVERRUN_S, self._exit_now, "shutdown_overrun", EXIT_FAILURE)

    @staticmethod
    def _exit_now(event: str, code: int, **fields: Any) -> None:
        logs.get("harvester").warning(event, exit_code=code, **fields)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


async def cmd_sim(args: argparse.Namespace) -> int:
    from harvester.sim import cli as sim_cli

    return await sim_cli.serve(args)


async def cmd_demo(args: argparse.Namespace) -> int:
    from harvester.commands import demo

    return await demo.run(args)


# ---------------------------------------------------------------- parser


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the whole usage block before a usage error; the contract is one line."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = OneLineParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="TOML config file (default: $HARVESTER_CONFIG)")

    parser = OneLineParser(
        prog="harvester",
        description="Harvest SpiderIQ job results into PostgreSQL under one shared rate limit.",
    )
    parser.add_argument("--version", action="version", version=f"harvester {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)

    def add(
        name: str, handler: Callable[[argparse.Namespace], Coroutine[Any, Any, int]], text: str
    ) -> argparse.ArgumentParser:
        command = sub.add_parser(name, parents=[common], help=text, description=text)
        command.set_defaults(handler=handler)
        return command

    add("migrate", cmd_migrate, "apply sql/ migrations in order, once each, under an advisory lock")

    run = add("run", cmd_run, "run the daemon")
    run.add_argument("--drain", action="store_true", help="exit 0 once no job is pending")
    run.add_argument("--max-seconds", type=float, metavar="N", help="stop after N seconds")
    run.add_argument(
        "--speed", type=float, metavar="X", help="time scale for a loopback simulator (divides durations)"
    )
    run.add_argument(
        "--migrate",
        action="store_true",
        help="apply pending migrations first (default: exit 1 if any are pending)",
    )

    enqueue = add("enqueue", cmd_enqueue, "add job IDs to the queue (all or nothing)")
    enqueue.add_argument("ids", nargs="*", metavar="ID", help="job IDs (UUIDs)")
    enqueue.add_argument("--file", metavar="F", help="read one ID per line from F, or - for stdin")
    enqueue.add_argument(
        "--tag", action="append", default=[], metavar="K=V", help="tag to store with the jobs (repeatable)"
    )
    enqueue.add_argument(
        "--priority", type=int, default=0, metavar="N", help="higher is polled first (default 0)"
    )
    enqueue.add_argument(
        "--account",
        default=config.DEFAULT_ACCOUNT,
        metavar="NAME",
        help="the account (SpiderIQ client) that submitted the jobs (default: default)",
    )

    status = add("status", cmd_status, "jobs per state, oldest pending, polls, errors, limiter")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--watch", action="store_true", help="a live screen until Ctrl-C")
    status.add_argument("--interval", type=float, metavar="S", help="seconds between frames (default 2)")
    status.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N frames")
    status.add_argument("--by-tag", metavar="KEY", help="progress per value of the tag KEY")

    show = add("show", cmd_show, "one job: state, polls, last HTTP status and error, timings, rows")
    show.add_argument("job_id", metavar="JOB_ID")
    show.add_argument("--json", action="store_true", help="machine-readable output")

    from harvester.commands import export as export_mod

    exp = add("export", cmd_export, "stream an output view as CSV or JSON Lines (COPY)")
    exp.add_argument("view", metavar="VIEW", help=f"one of: {', '.join(export_mod.VIEWS)}")
    exp.add_argument("--format", choices=export_mod.FORMATS, default="csv", help="default csv")
    exp.add_argument("--since", metavar="N|TIME", help="only jobs changed after change N or after TIME")
    exp.add_argument(
        "--tag", action="append", default=[], metavar="K=V", help="only jobs with this tag (repeatable)"
    )
    exp.add_argument("--out", metavar="FILE", help="write FILE (replaced when complete) instead of stdout")
    exp.add_argument("--bom", action="store_true", help="CSV: start with a UTF-8 BOM (for Excel)")

    imp = add("import", cmd_import, "store result bodies from files without calling the API")
    imp.add_argument("paths", nargs="+", metavar="PATH", help="JSON or JSON Lines files, or folders")

    rep = add("reprocess", cmd_reprocess, "rebuild normalized rows from stored raw bodies")
    rep.add_argument("ids", nargs="*", metavar="ID")
    rep.add_argument("--all", action="store_true", help="every harvested job")

    req = add("requeue", cmd_requeue, "put finished jobs back to pending")
    req.add_argument("ids", nargs="*", metavar="ID")
    req.add_argument(
        "--state",
        choices=[s for s in STATES if s != "pending"],
        help="requeue every job in this state (or only matching IDs)",
    )

    sim = add("sim", cmd_sim, "run the SpiderIQ simulator")
    from harvester.sim import cli as sim_cli

    sim_cli.add_arguments(sim)

    demo = add("demo", cmd_demo, "the end-to-end demo (what `make demo` runs)")
    from harvester.commands import demo as demo_mod

    demo_mod.add_arguments(demo)
    return parser


def is_db_failure(exc: BaseException) -> bool:
    """The database away or refusing a statement: a runtime failure, not a bug to trace back."""
    from harvester.db import DB_OR_SQL_ERRORS

    return isinstance(exc, DB_OR_SQL_ERRORS)


def describe_db_failure(exc: BaseException) -> str:
    """One line for a database failure a command did not wrap itself (exit 1, no traceback).

    A schema that is missing (a database nobody migrated) gets the fix in the message.
    """
    import asyncpg

    text = f"database error: {type(exc).__name__}: {exc}"
    if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.InvalidSchemaNameError):
        text += " (run `harvester migrate` first)"
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(asyncio.run(args.handler(args)))
        sys.stdout.flush()  # a reader gone shows here, inside the handling below
        return code
    except BrokenPipeError as exc:
        from harvester.commands.output import stdout_gone

        if stdout_gone():  # the reader has what it wanted, as for `export ... | head`
            return EXIT_OK
        print(f"harvester: {logs.scrub(describe_db_failure(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except (ConfigError, UsageError, MigrationHistoryError) as exc:
        print(f"harvester: {logs.scrub(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except HarvesterError as exc:
        print(f"harvester: {logs.scrub(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:
        if not is_db_failure(exc):
            raise
        print(f"harvester: {logs.scrub(describe_db_failure(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
