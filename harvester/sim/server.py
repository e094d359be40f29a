"""Running the simulator: :class:`SimServer` for tests and :func:`run_until_stopped` for the CLI.

``async with SimServer(speed=50, seed=1) as sim:`` starts the app on 127.0.0.1 with a free port
and stops it on exit; ``sim.url`` is the base URL, ``sim.state`` the live world (jobs, credentials,
faults) for direct manipulation and ``sim.stats()`` the same dict as ``GET /_sim/stats``.
"""

from __future__ import annotations

import dataclasses
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from harvester.sim.app import build_app
from harvester.sim.clock import Clock
from harvester.sim.settings import FaultSettings, SimSettings
from harvester.sim.state import STATE_KEY, SimState


class SimServer:
    """An in-process simulator on a free loopback port, as an async context manager."""

    def __init__(
        self,
        settings: SimSettings | None = None,
        *,
        clock: Clock | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        **overrides: Any,
    ) -> None:
        base = settings or SimSettings()
        faults = overrides.pop("faults", None)
        if isinstance(faults, dict):
            overrides["faults"] = FaultSettings(**faults)
        elif faults is not None:
            overrides["faults"] = faults
        if "tokens" in overrides:
            overrides["tokens"] = tuple(overrides["tokens"])
        self.settings = dataclasses.replace(base, host=host, port=port, **overrides)
        self.app = build_app(self.settings, clock)
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def state(self) -> SimState:
        return self.app[STATE_KEY]

    @property
    def token(self) -> str:
        """The first configured credential, the one most tests use."""
        return self.settings.tokens[0]

    def stats(self, per_job: bool = True) -> dict[str, Any]:
        return self.state.stats(per_job=per_job)

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        addresses = self._runner.addresses
        port = addresses[0][1] if addresses else self.settings.port
        host = self.settings.host if ":" not in self.settings.host else f"[{self.settings.host}]"
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def submit_mix(base_url: str, token: str, count: int) -> list[str]:
    """Create ``count`` jobs through the admin endpoint (no rate limit spent): two thirds
    spiderSite, one third spiderMaps; the same ids for the same seed."""
    site = count * 2 // 3
    ids: list[str] = []
    async with aiohttp.ClientSession() as session:
        for job_type, n in (("spiderSite", site), ("spiderMaps", count - site)):
            async with session.post(
                f"{base_url}/_sim/jobs", json={"count": n, "type": job_type, "token": token}
            ) as resp:
                resp.raise_for_status()
                ids += [str(i) for i in (await resp.json())["job_ids"]]
    return ids
