"""``python -m bench [NAME|all] [--quick]``: run, print, save JSON (NAME: see MODULES)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from typing import Any

from bench.common import BenchFailed

# sub-benchmark name -> module in this package
MODULES = {
    "harvest": "bench.harvest",
    "ingest": "bench.ingest",
    "queue": "bench.claims",
    "memory": "bench.memory",
    "events": "bench.events",
    "accounts": "bench.accounts",
    "notify": "bench.notify",
    "export": "bench.export",
    "expiry": "bench.expiry",
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", nargs="?", default="all", choices=[*MODULES, "all"])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short runs that only show the benchmark works (figures not meaningful)",
    )
    parser.add_argument("--dsn", help="a PostgreSQL server to create databases on (default: a throwaway one)")
    parser.add_argument("--out", help="write JSON here instead of bench/results/")
    for module in MODULES.values():
        importlib.import_module(module).add_arguments(parser)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Run each benchmark; a failed one does not stop the others, but the exit code reports it."""
    names = list(MODULES) if args.name == "all" else [args.name]
    failures: list[BenchFailed] = []
    for name in names:
        began = time.monotonic()
        print(f"\n== {name} ==", flush=True)
        module: Any = importlib.import_module(MODULES[name])
        try:
            await module.run(args)
        except BenchFailed as exc:
            failures.append(exc)
            print(f"({name}: FAILED, exit {exc.exit_code}: {exc.reason})", flush=True)
            continue
        print(f"({name}: {time.monotonic() - began:.0f} s)", flush=True)
    for failure in failures:
        print(f"bench: {failure.name} failed (exit {failure.exit_code}): {failure.reason}", file=sys.stderr)
    return failures[0].exit_code if failures else 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
