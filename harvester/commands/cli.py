"""Command line: the parser, ``asyncio.run`` and exit codes. Each command's handler checks its
arguments, loads the config and hands over: ``run`` (the daemon, ``migrate``), ``jobs``
(``enqueue``, ``import``, ``reprocess``, ``requeue``), ``read`` (``status``, ``show``,
``export``), the simulator's own ``sim.cli`` and ``demo``.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error (one line, no traceback). A
database failure no command wrapped itself is one line too.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import typing
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from harvester import __version__, config, logs
from harvester.commands import demo, jobs, read, run
from harvester.commands.arguments import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from harvester.commands.output import stdout_gone
from harvester.commands.report import STATES
from harvester.db import DB_OR_SQL_ERRORS
from harvester.db.export import FORMATS, VIEWS
from harvester.db.pool import schema_missing
from harvester.errors import ConfigError, HarvesterError, MigrationHistoryError, UsageError
from harvester.sim import cli as sim_cli

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


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

    def add(name: str, handler: Handler, text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, parents=[common], help=text, description=text)
        command.set_defaults(handler=handler)
        return command

    add("migrate", run.cmd_migrate, "apply sql/ migrations in order, once each, under an advisory lock")

    daemon = add("run", run.cmd_run, "run the daemon")
    daemon.add_argument("--drain", action="store_true", help="exit 0 once no job is pending")
    daemon.add_argument("--max-seconds", type=float, metavar="N", help="stop after N seconds")
    daemon.add_argument(
        "--speed", type=float, metavar="X", help="time scale for a loopback simulator (divides durations)"
    )
    daemon.add_argument(
        "--migrate",
        action="store_true",
        help="apply pending migrations first (default: exit 1 if any are pending)",
    )

    enqueue = add("enqueue", jobs.cmd_enqueue, "add job IDs to the queue (all or nothing)")
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

    status = add("status", read.cmd_status, "jobs per state, oldest pending, polls, errors, limiter")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--watch", action="store_true", help="a live screen until Ctrl-C")
    status.add_argument("--interval", type=float, metavar="S", help="seconds between frames (default 2)")
    status.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N frames")
    status.add_argument("--by-tag", metavar="KEY", help="progress per value of the tag KEY")

    show = add("show", read.cmd_show, "one job: state, polls, last HTTP status and error, timings, rows")
    show.add_argument("job_id", metavar="JOB_ID")
    show.add_argument("--json", action="store_true", help="machine-readable output")

    exp = add("export", read.cmd_export, "stream an output view as CSV or JSON Lines (COPY)")
    exp.add_argument("view", metavar="VIEW", help=f"one of: {', '.join(VIEWS)}")
    exp.add_argument("--format", choices=FORMATS, default="csv", help="default csv")
    exp.add_argument("--since", metavar="N|TIME", help="only jobs changed after change N or after TIME")
    exp.add_argument(
        "--tag", action="append", default=[], metavar="K=V", help="only jobs with this tag (repeatable)"
    )
    exp.add_argument("--out", metavar="FILE", help="write FILE (replaced when complete) instead of stdout")
    exp.add_argument("--bom", action="store_true", help="CSV: start with a UTF-8 BOM (for Excel)")

    imp = add("import", jobs.cmd_import, "store result bodies from files without calling the API")
    imp.add_argument("paths", nargs="+", metavar="PATH", help="JSON or JSON Lines files, or folders")

    rep = add("reprocess", jobs.cmd_reprocess, "rebuild normalized rows from stored raw bodies")
    rep.add_argument("ids", nargs="*", metavar="ID")
    rep.add_argument("--all", action="store_true", help="every harvested job")

    req = add("requeue", jobs.cmd_requeue, "put finished jobs back to pending")
    req.add_argument("ids", nargs="*", metavar="ID")
    req.add_argument(
        "--state",
        choices=[s for s in STATES if s != "pending"],
        help="requeue every job in this state (or only matching IDs)",
    )

    sim_cli.add_arguments(add("sim", sim_cli.serve, "run the SpiderIQ simulator"))
    demo.add_arguments(add("demo", demo.run, "the end-to-end demo (what `make demo` runs)"))
    return parser


def is_db_failure(exc: BaseException) -> bool:
    """The database away or refusing a statement: a runtime failure, not a bug to trace back."""
    return isinstance(exc, DB_OR_SQL_ERRORS)


def describe_db_failure(exc: BaseException) -> str:
    """One line for a database failure a command did not wrap itself (exit 1, no traceback).

    A schema that is missing (a database nobody migrated) gets the fix in the message.
    """
    text = f"database error: {type(exc).__name__}: {exc}"
    if schema_missing(exc):
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
