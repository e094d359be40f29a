"""``harvester run``, the daemon under signals, and ``harvester migrate``, the schema it needs.

The daemon's signal handlers are set here: the first SIGTERM or SIGINT stops it gracefully, a
second exits at once; SIGHUP re-reads every account's token.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from harvester import logs
from harvester.commands.arguments import EXIT_FAILURE, EXIT_OK, load_config
from harvester.db import session
from harvester.errors import UsageError


async def cmd_migrate(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    applied = await session.apply_migrations(cfg.database)
    logs.get().info("migrations_applied", versions=applied, count=len(applied))
    return EXIT_OK


async def cmd_run(args: argparse.Namespace) -> int:
    if args.max_seconds is not None and not args.max_seconds > 0:
        raise UsageError("--max-seconds: must be a positive number of seconds")
    overrides = {"speed": args.speed, "database.migrate_on_start": True if args.migrate else None}
    cfg = load_config(args, **overrides)
    # The daemon's modules load only for the commands that run it: every other command starts
    # without them (they pull in the HTTP client and the loops: a third of a second).
    from harvester.daemon import run as daemon

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
