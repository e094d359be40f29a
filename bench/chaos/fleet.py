"""A fleet of ``harvester run`` processes that the chaos driver kills and restarts.

Every process shares one database and one credential, exactly like a production deployment with
several replicas. All of their output (stdout and stderr, across every restart) is appended to one
file per slot, so the security check can read every line any of them ever wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


def harvester_command() -> list[str]:
    """The installed ``harvester`` script next to this interpreter, else the module entry point."""
    script = Path(sys.executable).with_name("harvester")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from harvester.commands.cli import main; sys.exit(main())"]


def daemon_env(dsn: str, base_url: str, token: str, speed: float, listen: str) -> dict[str, str]:
    """The environment of one daemon: the documented variables only, nothing inherited that
    could change its configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
    env.update(
        {
            "HARVESTER_DSN": dsn,
            "HARVESTER_API_TOKEN": token,
            "HARVESTER_API_BASE_URL": base_url,
            "HARVESTER_SPEED": f"{speed:g}",
            "HARVESTER_SERVER__LISTEN": listen,
            "HARVESTER_LOG_LEVEL": "info",
            "HARVESTER_DATABASE__POOL_MAX": "4",
            # a daemon restarted while PostgreSQL restarts waits for it (10 s), not 10 s / speed
            "HARVESTER_DATABASE__STARTUP_WAIT_S": f"{10.0 * speed:g}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@dataclass
class Slot:
    """One replica: its current process, its metrics address and its output file."""

    index: int
    listen: str
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    unexpected_exits: list[int] = field(default_factory=list)


class Fleet:
    """N daemon processes; ``kill_one`` SIGKILLs a random live one and starts it again."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        count: int,
        ports: list[int],
        rng: random.Random,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.base_env = env
        self.rng = rng
        self.extra_args = extra_args
        self.slots = [Slot(i, f"127.0.0.1:{ports[i]}", log_dir / f"daemon-{i}.log") for i in range(count)]
        self.kills = 0
        self._files: dict[int, IO[bytes]] = {}

    async def start_all(self) -> None:
        for slot in self.slots:
            await self._start(slot)

    async def _start(self, slot: Slot) -> None:
        env = dict(self.base_env, HARVESTER_SERVER__LISTEN=slot.listen)
        out = self._output(slot)
        slot.process = await asyncio.create_subprocess_exec(
            *harvester_command(),
            "run",
            *self.extra_args,
            env=env,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
        )
        slot.starts += 1

    def _output(self, slot: Slot) -> IO[bytes]:
        """The slot's log file, opened once and appended to by every process it runs."""
        out = self._files.get(slot.index)
        if out is None:
            out = self._files[slot.index] = open(slot.log_path, "ab")  # noqa: SIM115 - closed in close()
        return out

    async def kill_one(self) -> int:
        """SIGKILL one live process (no chance to release leases or finish a store), restart it."""
        live = [s for s in self.slots if s.process is not None and s.process.returncode is None]
        if not live:
            return -1
        slot = self.rng.choice(live)
        assert slot.process is not None
        with contextlib.suppress(ProcessLookupError):
            slot.process.send_signal(signal.SIGKILL)
        await slot.process.wait()
        self.kills += 1
        await self._start(slot)
        return slot.index

    async def revive_exited(self) -> None:
        """A process that ended on its own is noted (its exit code) and started again."""
        for slot in self.slots:
            proc = slot.process
            if proc is not None and proc.returncode is not None:
                slot.unexpected_exits.append(proc.returncode)
                await self._start(slot)

    async def stop_all(self, grace_s: float = 30.0) -> list[int | None]:
        """SIGTERM everyone (a graceful stop), SIGKILL whoever outlives the grace period."""
        codes: list[int | None] = []
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(signal.SIGTERM)
        for slot in self.slots:
            proc = slot.process
            if proc is None:
                codes.append(None)
                continue
            try:
                codes.append(await asyncio.wait_for(proc.wait(), timeout=grace_s))
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGKILL)
                codes.append(await proc.wait())
        return codes

    def kill_all(self) -> None:
        """SIGKILL every live process: the driver failed, and no daemon may outlive it."""
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(signal.SIGKILL)

    def close(self) -> None:
        for out in self._files.values():
            out.close()
        self._files.clear()

    @property
    def unexpected_exits(self) -> list[int]:
        return [code for slot in self.slots for code in slot.unexpected_exits]
